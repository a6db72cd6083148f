"""Cross-cutting request handling: ids bound to every log line, and errors as JSON with a code."""

from __future__ import annotations

import hmac
import os
import re
import time

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from pydantic import SecretStr

from gateway import appkeys
from handoff.desk import DeskError

log = structlog.get_logger(__name__)


# A caller's (or a proxy's) id is kept only when it is plainly an id: it goes into every log line and back out
# in a header, so quotes, control characters, spaces and kilobytes of text stay out of both.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def request_id_for(request: web.Request) -> str:
    offered = request.headers.get("X-Request-Id", "")
    return offered if _REQUEST_ID.fullmatch(offered) else os.urandom(16).hex()


def bearer_is(request: web.Request, secret: SecretStr) -> bool:
    """Whether the request carries ``Authorization: Bearer <secret>`` (compared in constant time)."""
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    expected = secret.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), expected)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The request's id (the caller's X-Request-Id when it is plainly an id, else a new one) and path bound
    to every log line, and echoed in X-Request-Id. HTTP errors become ``{"code", "detail"}``, and so does a
    DeskError wherever it is raised (the agent API, and desk steps a voice webhook takes), with its own status
    and code; anything unexpected is logged and is a plain 500. Each request is counted and timed for
    ``GET /metrics`` (gateway/metrics.py). One middleware rather than several: every request pays for each."""
    metrics = request.app[appkeys.METRICS]
    route, channel = metrics.route_of(request)
    started = time.perf_counter()
    status, response = 499, None  # cancelled: the client went away first
    try:
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            with metrics.websocket(route, channel):
                response = await _answer(request, handler)
        else:
            response = await _answer(request, handler)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.answered(request, route, channel, status, time.perf_counter() - started, response=response)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request_id_for(request)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, path=request.path)
    try:
        response = await handler(request)
    except DeskError as exc:
        response = web.json_response({"code": exc.code, "detail": exc.detail}, status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = exc.reason.lower().replace(" ", "_")
        response = web.json_response({"code": code, "detail": exc.text or exc.reason}, status=exc.status,
                                     headers={k: v for k, v in exc.headers.items() if k == "Allow"})
    except Exception:
        log.exception("request.failed")
        detail = "Something went wrong on our side."
        response = web.json_response({"code": "internal_error", "detail": detail}, status=500)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response
