"""Queues in Redis: where handed-off conversations wait, ordered by priority, then by waiting time.

One sorted set per queue under the desk's hash tag. The score packs both orderings into one number: a
higher priority sorts first, and within a priority the longest waiting does. The agent desk (assignment,
offers) reads the same sets.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from handoff.routing import QueueLoad
from sessions.keys import Keys

_PRIORITY_STEP = 10**13  # above any epoch-milliseconds value for centuries
MAX_PRIORITY = 9


def queue_score(priority: int, since: datetime) -> float:
    return float((MAX_PRIORITY - priority) * _PRIORITY_STEP + int(since.timestamp() * 1000))


def waiting_since(score: float) -> datetime:
    return datetime.fromtimestamp((int(score) % _PRIORITY_STEP) / 1000, UTC)


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
        self._figures: AsyncScript = redis.register_script(
            (files("handoff") / "lua" / "queue_figures.lua").read_text(encoding="utf-8"))

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
        """Each queue's figures, in one script call on the desk's tag (queue_figures.lua). The longest wait
        is read from the head of each priority's band, so a long queue costs no more than a short one; an
        entry put back at the head (a hand-back) takes a score just below the queue's first, which reads as
        the agent API always has."""
        names = list(dict.fromkeys(queues))
        if not names:
            return {}
        keys = [key for name in names
                for key in (self.keys.queue(self.desk, name), self.keys.backlog(self.desk, name))]
        raw: list[Any] = await self._figures(keys=keys, args=[_PRIORITY_STEP, MAX_PRIORITY + 1])
        result: dict[str, QueueFigures] = {}
        for index, name in enumerate(names):
            depth, backlog, oldest = (int(v) for v in raw[3 * index : 3 * index + 3])
            since = datetime.fromtimestamp(oldest / 1000, UTC) if oldest >= 0 else None
            result[name] = QueueFigures(depth, backlog, since)
        return result

    async def waiting(self, queue: str, limit: int = 100, *, live: bool = True) -> list[tuple[str, datetime]]:
        """Conversation ids in serving order, with when each started waiting."""
        raw: list[Any] = await self.redis.zrange(self._key(queue, live), 0, limit - 1, withscores=True)
        return [(bytes(member).decode(), waiting_since(float(score))) for member, score in raw]
