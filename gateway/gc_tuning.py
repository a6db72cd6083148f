"""Garbage-collector settings for a process that serves the gateway (not for tests or tools).

What start-up built (rules, bot, lexicons, pydantic schemas) lives as long as the process: frozen, the
collector's full passes no longer walk it. A message allocates hundreds of short-lived containers, so with
the default young-generation threshold (700) the collector ran several times per message; at 5,000 it runs
about once every three messages, for about a third of the collector time (tests/bench/README.md).
"""

from __future__ import annotations

import gc

from aiohttp import web

YOUNG_THRESHOLD = 5_000


async def tune_garbage_collection(app: web.Application) -> None:
    """An ``on_startup`` hook: it runs after every ``cleanup_ctx`` has built what the app keeps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 10)
