"""The real gateway, plus a count of the Redis round trips its client makes.

A round trip is one write of packed commands to Redis: a single command, a whole pipeline or one script call
each count once. Steps count what the gateway asked for: a call that shared a pipeline with others (the
batcher) is a step of its own. The benchmark reads the count before and after its message phase (sockets are already open,
so their pub/sub subscriptions fall outside it). Served at ``GET /bench/redis-roundtrips``; nothing here is
part of the product.
"""

from __future__ import annotations

import sys
from typing import Any

from aiohttp import web
from redis.asyncio.connection import Connection

from gateway import appkeys
from gateway.app import create_app
from gateway.gc_tuning import tune_garbage_collection
from gateway.logs import configure_logging
from gateway.settings import load_settings

_counter = {"round_trips": 0}
_original_send = Connection.send_packed_command


async def _counting_send(self: Connection, command: Any, check_health: bool = True) -> None:
    _counter["round_trips"] += 1
    await _original_send(self, command, check_health)


async def _round_trips(request: web.Request) -> web.Response:
    """Writes to Redis, and steps: what the writes would have been had no batch shared one (each call the
    batcher took would have been its own write)."""
    batcher = request.app[appkeys.STORE].batcher
    trips = _counter["round_trips"]
    return web.json_response({"round_trips": trips, "steps": trips - batcher.batches + batcher.calls})


def main() -> None:
    Connection.send_packed_command = _counting_send  # type: ignore[method-assign]
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    app.on_startup.append(tune_garbage_collection)  # as `handoff-gateway run` does
    app.router.add_get("/bench/redis-roundtrips", _round_trips)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
