"""``GET /metrics``: this process's figures and the desk's, in Prometheus' text format.

Who may scrape: with ``METRICS_TOKEN`` set, whoever sends ``Authorization: Bearer <METRICS_TOKEN>`` (401
``unauthorized`` otherwise); without it, only a caller on this machine's loopback that came through no proxy
(403 ``metrics_token_required`` otherwise). The figures name queues and count agents and customers: not for
the public, and a proxy on the same host would make every visitor look local, hence the forwarding check.
"""

from __future__ import annotations

import asyncio
from ipaddress import ip_address

import structlog
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from redis.exceptions import RedisError

from gateway import appkeys
from gateway.desk_metrics import desk_registry
from gateway.middleware import bearer_is
from handoff.overview import QueueStanding, desk_overview
from sessions.models import utcnow

log = structlog.get_logger(__name__)

DESK_READ_TIMEOUT_SECONDS = 2.0
_FORWARDED = (hdrs.FORWARDED, hdrs.X_FORWARDED_FOR, hdrs.X_FORWARDED_HOST, "X-Real-IP")


def _error(status: int, code: str, detail: str) -> web.Response:
    return web.json_response({"code": code, "detail": detail}, status=status)


def _refusal(request: web.Request) -> web.Response | None:
    token = request.app[appkeys.SETTINGS].metrics_token
    if token is not None:
        if bearer_is(request, token):
            return None
        response = _error(401, "unauthorized", "Send Authorization: Bearer <METRICS_TOKEN>.")
        response.headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
        return response
    if _loopback(request.remote) and not any(name in request.headers for name in _FORWARDED):
        return None
    return _error(403, "metrics_token_required",
                  "Without METRICS_TOKEN, /metrics answers only direct callers on this machine's loopback.")


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ip_address(remote).is_loopback
    except ValueError:  # a unix socket's peer, or nothing readable
        return False


async def _read_desk(app: web.Application) -> list[QueueStanding] | None:
    metrics = app[appkeys.METRICS]
    try:
        with metrics.timed_step("metrics_desk_read"):
            async with asyncio.timeout(DESK_READ_TIMEOUT_SECONDS):
                return await desk_overview(app[appkeys.QUEUES], app[appkeys.AGENTS], app[appkeys.RULES].rules)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics.desk_unreadable", error=type(exc).__name__)
        return None


async def scrape(request: web.Request) -> web.Response:
    if (refused := _refusal(request)) is not None:
        return refused
    app = request.app
    standings = await _read_desk(app)
    own = generate_latest(app[appkeys.METRICS].registry)
    body = own + generate_latest(desk_registry(standings, utcnow()))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4})
