"""The review dashboard (``/review``, also ``/dashboard``) and the figures it draws, for supervisors.

The same checklist as ``handoff-gateway review``, read from the same day counters (never raw records), plus
a series per day for the charts and the desk's live standing (handoff/overview.py, what ``/metrics`` and the
console read). A supervisor's token (``agents add --supervisor``) or the ``ADMIN_TOKEN`` opens it; an agent's
token gets 403, no token 401.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.middleware import bearer_is
from gateway.pages import PAGE_HEADERS, static_asset, static_text
from gateway.review_cli import WEEK, SinceError, parse_since
from handoff.overview import desk_overview
from handoff.review.buckets import Totals
from handoff.review.recorder import days_back
from handoff.review.report import reached_queues, review
from sessions.models import utcnow

ASSETS = {"review.js": "application/javascript", "review.css": "text/css",
          "uPlot.iife.min.js": "application/javascript", "uPlot.min.css": "text/css",
          "uPlot.LICENSE.txt": "text/plain"}


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"code": code, "detail": detail}, status=status)


async def _denied(request: web.Request) -> web.Response | None:
    """None for a supervisor or the admin; else the answer that says why not."""
    admin = request.app[appkeys.SETTINGS].admin_token
    if admin is not None and bearer_is(request, admin):
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    agent = await request.app[appkeys.AGENTS].authenticate(token) if scheme.lower() == "bearer" else None
    if agent is None:
        return _error(401, "unauthorized", "Send a supervisor's token, or ADMIN_TOKEN, as a bearer token.")
    if not agent.supervisor:
        return _error(403, "supervisor_only", "The review is for supervisors (agents add NAME --supervisor).")
    return None


async def page(request: web.Request) -> web.Response:
    return web.Response(text=static_text("review.html"), content_type="text/html", headers=PAGE_HEADERS)


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return static_asset(name, ASSETS[name])


def _daily(days: list[str], counters: list[dict[str, float]]) -> dict[str, list[Any]]:
    """One point a day for the charts: volume, escalation rate, and abandonment while waiting."""
    series: dict[str, list[Any]] = {"day": days, "conversations": [], "escalations": [],
                                    "escalation_rate": [], "abandonment_rate": []}
    for day in counters:
        totals = Totals([day])
        conversations, escalations = totals.get("conversations"), totals.get("escalations")
        abandoned = totals.get("abandoned_waiting")
        series["conversations"].append(int(conversations))
        series["escalations"].append(int(escalations))
        series["escalation_rate"].append(round(escalations / conversations, 4) if conversations else None)
        series["abandonment_rate"].append(round(abandoned / escalations, 4) if escalations else None)
    return series


async def figures(request: web.Request) -> web.Response:
    """``GET /api/review?since=30d``: the checklist, signals first, and the day-by-day series."""
    if (denied := await _denied(request)) is not None:
        return denied
    app = request.app
    settings = app[appkeys.SETTINGS]
    since = request.query.get("since", "30d")
    try:
        days = parse_since(since, settings.review_retention_days)
    except SinceError as exc:
        return _error(400, "invalid_since", str(exc).removeprefix("--since: "))
    recorder = app[appkeys.REVIEW]
    zone, _ = recorder.team()
    span = days_back(utcnow().astimezone(zone).date(), max(days, 2 * WEEK))
    counters = await recorder.day_counters(span)
    window = Totals(counters[-days:])
    body: dict[str, Any] = {
        "since": since, "days": days, "from": span[-days].isoformat(), "to": span[-1].isoformat(),
        "time_zone": str(zone), "daily": _daily([d.isoformat() for d in span[-days:]], counters[-days:]),
        "signals": [], "sections": {},
    }
    if not window:
        body["empty"] = f"No data for the last {days} days: nothing has been recorded yet."
        return web.json_response(body)
    rules = app[appkeys.RULES].rules
    agents = await app[appkeys.AGENTS].all()
    serves = {q: any(a.serves(q, list(rules.queue(q).skills)) for a in agents)
              for q in reached_queues(rules) if q in rules.queues.queues}
    checklist = review(window, Totals(counters[-WEEK:]), Totals(counters[-2 * WEEK:-WEEK]), rules=rules,
                       serves=serves)
    body["signals"] = [{**s, "text": f"{s['signal']}: {s['subject']} at {s['figure']} "
                                     f"(threshold {s['threshold']})"} for s in checklist.pop("signals")]
    body["sections"] = checklist
    return web.json_response(body)


async def live(request: web.Request) -> web.Response:
    """``GET /api/review/live``: every queue's depth, oldest wait and agents online, read from Redis now."""
    if (denied := await _denied(request)) is not None:
        return denied
    app = request.app
    rules, now = app[appkeys.RULES].rules, utcnow()
    rows = []
    for standing in await desk_overview(app[appkeys.QUEUES], app[appkeys.AGENTS], rules):
        queue, oldest = rules.queue(standing.queue), standing.oldest_wait_seconds(now)
        rows.append({"id": standing.queue, "name": queue.name, "depth": standing.figures.depth,
                     "backlog": standing.figures.backlog, "agents_online": standing.agents_online,
                     "oldest_wait_seconds": round(oldest) if oldest is not None else None,
                     "open_now": rules.is_open(queue.hours, now)})
    return web.json_response({"queues": rows, "at": now.isoformat()})


def setup(app: web.Application) -> None:
    for path in ("/review", "/dashboard"):
        app.router.add_get(path, page)
    app.router.add_get("/review/{name}", asset)
    app.router.add_get("/api/review", figures)
    app.router.add_get("/api/review/live", live)
