"""Abuse limits counted in Redis, so they hold however many gateway instances share the load.

A token bucket per key: ``burst`` tokens at most, refilled at ``per_second``. Taking a token is one Lua
script over one key (one round trip, shared with other steps through the batcher; Cluster-safe). A refused
take writes nothing, and an idle bucket expires once it would be full again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from sessions.batching import RedisBatcher


@dataclass(frozen=True, slots=True)
class Rate:
    burst: int
    per_second: float

    @classmethod
    def per_minute(cls, count: int, burst: int) -> Rate:
        return cls(burst, count / 60)

    @classmethod
    def per_hour(cls, count: int, burst: int | None = None) -> Rate:
        return cls(burst if burst is not None else count, count / 3600)


class RateLimiter:
    def __init__(self, redis: Redis, batcher: RedisBatcher) -> None:
        self.batcher = batcher
        self._take: AsyncScript = redis.register_script(
            (files("sessions") / "lua" / "take_token.lua").read_text(encoding="utf-8"))

    async def take(self, key: str, rate: Rate) -> float:
        """0 when allowed (a token was taken), else the seconds to wait before trying again."""
        wait_ms = await self.batcher.script(
            self._take, [key], [rate.burst, rate.per_second, int(time.time() * 1000)])
        return int(wait_ms) / 1000
