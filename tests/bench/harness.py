"""What the benchmarks share: a Redis to run against (REDIS_URL, or a throwaway embedded one)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.embedded_redis import EmbeddedRedis


def run_against_redis(run: Callable[[str], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """``run(redis_url)`` against REDIS_URL when set, else a throwaway embedded server."""
    url = os.environ.get("REDIS_URL")
    if url:
        return asyncio.run(run(url))
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), persistent=False) as server:
        return asyncio.run(run(server.url))
