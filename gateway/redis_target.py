"""Which Redis a command talks to: REDIS_URL, else the embedded server a running gateway started, else a new
embedded one on the same data directory, so every CLI command sees what ``make run`` stored."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.embedded_redis import EmbeddedRedis, running_url
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class RedisTarget:
    url: str
    description: str


@contextlib.contextmanager
def redis_target(settings: Settings, supervise: bool = False) -> Iterator[RedisTarget]:
    """``supervise``: an embedded server started here is restarted whenever it dies (``run`` asks for it)."""
    if settings.redis_url:
        yield RedisTarget(settings.redis_url, "REDIS_URL")
        return
    url = running_url(settings.data_dir)
    if url is not None:
        yield RedisTarget(url, f"embedded, shared with the running gateway (data in {settings.data_dir}/)")
        return
    with EmbeddedRedis(settings.data_dir, persistent=True, supervise=supervise) as server:
        yield RedisTarget(server.url, f"embedded (data in {settings.data_dir}/)")
