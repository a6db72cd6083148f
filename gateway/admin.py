"""Admin API: which rules are in force, and reloading them without a restart.

Guarded by ``ADMIN_TOKEN`` (a bearer token). Without it set, the admin API is off and says so, rather than
being open to anyone who can reach the port.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from gateway import appkeys
from gateway.middleware import bearer_is
from handoff.holder import RulesHolder
from handoff.problems import RulesError

log = structlog.get_logger(__name__)


def _error(status: int, code: str, detail: str, **extra: object) -> web.Response:
    return web.json_response({"code": code, "detail": detail, **extra}, status=status)


def _authorize(request: web.Request) -> web.Response | None:
    token = request.app[appkeys.SETTINGS].admin_token
    if token is None:
        return _error(403, "admin_disabled", "The admin API is off; set ADMIN_TOKEN to turn it on.")
    if not bearer_is(request, token):
        return _error(401, "unauthorized", "Send Authorization: Bearer <ADMIN_TOKEN>.")
    return None


def _describe(holder: RulesHolder) -> dict[str, object]:
    rules = holder.rules
    return {
        "version": rules.version,
        "declared_version": rules.meta.version,
        "hash": rules.digest,
        "directory": str(holder.directory),
        "loaded_at": holder.loaded_at.isoformat(),
        "locales": rules.meta.locales,
        "queues": sorted(name for name, q in rules.queues.queues.items() if not q.retired),
    }


async def rules_info(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    return web.json_response(_describe(request.app[appkeys.RULES]))


async def rules_reload(request: web.Request) -> web.Response:
    """Load RULES_DIR again. An invalid set is refused with every problem listed; the old one stays."""
    if (denied := _authorize(request)) is not None:
        return denied
    holder = request.app[appkeys.RULES]
    previous = holder.rules.version
    try:
        _, changed = await holder.reload()
    except RulesError as exc:
        log.warning("rules.reload_refused", problems=len(exc.problems), kept=previous)
        return _error(
            422, "rules_invalid", f"The rules in {holder.directory} are invalid; {previous} stays in force.",
            problems=[{"file": p.file, "line": p.line, "field": p.field, "message": p.message}
                      for p in exc.problems],
        )
    body = {**_describe(holder), "changed": changed, "previous_version": previous}
    if (shadow := request.app.get(appkeys.SHADOW)) is not None:  # the candidate beside them, too
        candidate = shadow.holder
        try:
            _, shadow_changed = await candidate.reload()
            body["shadow"] = {"version": candidate.rules.version, "changed": shadow_changed}
        except RulesError as exc:
            body["shadow"] = {"version": candidate.rules.version, "changed": False, "code": "rules_invalid",
                              "problems": [p.message for p in exc.problems]}
    return web.json_response(body)
