"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from gateway import appkeys


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready only when Redis answers: without it nothing can be stored, so traffic should go elsewhere."""
    try:
        async with asyncio.timeout(1.0):
            await request.app[appkeys.REDIS].ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return web.json_response(
            {"status": "unavailable", "code": "redis_unreachable", "detail": type(exc).__name__}, status=503
        )
    return web.json_response({"status": "ready"})
