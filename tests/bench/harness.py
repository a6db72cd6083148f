"""What the benchmarks share: a Redis to run against (REDIS_URL, or a throwaway embedded one)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway.embedded_redis import EmbeddedRedis


def run_against_redis(run: Callable[[str], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """``run(redis_url)`` against REDIS_URL when set, else a throwaway embedded server."""
    url = os.environ.get("REDIS_URL")
    if url:
        return asyncio.run(run(url))
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), persistent=False) as server:
        return asyncio.run(run(server.url))


async def commands_run(redis: Redis) -> int:
    """Every command Redis has run so far, those run inside scripts included (INFO commandstats)."""
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


async def gateway_redis_counts(http: aiohttp.ClientSession, base: str) -> dict[str, int]:
    """The instrumented gateway's Redis writes so far, and its steps (instrumented_gateway.py)."""
    async with http.get(f"{base}/bench/redis-roundtrips") as response:
        counts = await response.json()
        return {"round_trips": int(counts["round_trips"]), "steps": int(counts["steps"])}
