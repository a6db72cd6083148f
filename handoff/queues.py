"""Queues in Redis: where handed-off conversations wait, ordered by priority, then by waiting time.

One sorted set per queue under the desk's hash tag. The score packs both orderings into one number: a
higher priority sorts first, and within a priority the longest waiting does. The agent desk (assignment,
offers) reads the same sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


def _band(priority: int) -> tuple[int, int]:
    """The scores of one priority: its entries sort among themselves by waiting time."""
    low = (MAX_PRIORITY - priority) * _PRIORITY_STEP
    return low, low + _PRIORITY_STEP - 1


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """How a queue stands: conversations waiting live, follow-ups in its backlog, and since when the
    longest-waiting live one has waited (None when nobody waits)."""

    depth: int
    backlog: int
    oldest: datetime | None


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

    async def figures(self, queues: Iterable[str]) -> dict[str, QueueFigures]:
        """Each queue's figures in one round trip. The longest wait is read from the head of each priority's
        band (scores sort by priority, then by waiting time), so a long queue costs no more than a short one;
        an entry put back at the head (a hand-back) takes a score just below the queue's first, which the
        reading decodes as the agent API always has."""
        names = list(dict.fromkeys(queues))
        bands = [_band(p) for p in range(MAX_PRIORITY + 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                live = self.keys.queue(self.desk, name)
                pipe.zcard(live)
                pipe.zcard(self.keys.backlog(self.desk, name))
                for low, high in bands:
                    pipe.zrangebyscore(live, low, high, start=0, num=1, withscores=True)
            raw = await pipe.execute()
        result: dict[str, QueueFigures] = {}
        step = 2 + len(bands)
        for index, name in enumerate(names):
            depth, backlog, *heads = raw[index * step : (index + 1) * step]
            oldest = min((waiting_since(float(score)) for head in heads for _, score in head), default=None)
            result[name] = QueueFigures(int(depth), int(backlog), oldest)
        return result

    async def waiting(self, queue: str, limit: int = 100, *, live: bool = True) -> list[tuple[str, datetime]]:
        """Conversation ids in serving order, with when each started waiting."""
        raw: list[Any] = await self.redis.zrange(self._key(queue, live), 0, limit - 1, withscores=True)
        return [(bytes(member).decode(), waiting_since(float(score))) for member, score in raw]
