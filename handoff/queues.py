"""Queues in Redis: where handed-off conversations wait, ordered by priority, then by waiting time.

One sorted set per queue under the desk's hash tag. The score packs both orderings into one number: a
higher priority sorts first, and within a priority the longest waiting does. The agent desk (assignment,
offers) reads the same sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from handoff.routing import QueueLoad
from sessions.keys import Keys

_PRIORITY_STEP = 10**13  # above any epoch-milliseconds value for centuries
MAX_PRIORITY = 9


def queue_score(priority: int, since: datetime) -> float:
    return float((MAX_PRIORITY - priority) * _PRIORITY_STEP + int(since.timestamp() * 1000))


def waiting_since(score: float) -> datetime:
    return datetime.fromtimestamp((int(score) % _PRIORITY_STEP) / 1000, UTC)


class QueueStore:
    def __init__(self, redis: Redis, keys: Keys, desk: str = "main") -> None:
        self.redis = redis
        self.keys = keys
        self.desk = desk

    def _key(self, queue: str, live: bool) -> str:
        return self.keys.queue(self.desk, queue) if live else self.keys.backlog(self.desk, queue)

    async def enqueue(
        self, queue: str, conversation_id: str, priority: int, since: datetime, *, live: bool = True
    ) -> bool:
        """Add to the live queue, or to its backlog of asynchronous follow-ups. Idempotent: a conversation
        already waiting keeps its place. Returns whether it was added now."""
        added = await self.redis.zadd(
            self._key(queue, live), {conversation_id: queue_score(priority, since)}, nx=True
        )
        return bool(added)

    async def remove(self, queue: str, conversation_id: str, *, live: bool = True) -> None:
        await self.redis.zrem(self._key(queue, live), conversation_id)

    async def load(self, queues: Iterable[str]) -> dict[str, QueueLoad]:
        """Depth of each live queue (conversations waiting for a person now), in one round trip."""
        names = list(dict.fromkeys(queues))
        if not names:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(self.keys.queue(self.desk, name))
            depths = await pipe.execute()
        return {name: QueueLoad(depth=int(depth)) for name, depth in zip(names, depths, strict=True)}

    async def waiting(self, queue: str, limit: int = 100, *, live: bool = True) -> list[tuple[str, datetime]]:
        """Conversation ids in serving order, with when each started waiting."""
        raw: list[Any] = await self.redis.zrange(self._key(queue, live), 0, limit - 1, withscores=True)
        return [(bytes(member).decode(), waiting_since(float(score))) for member, score in raw]
