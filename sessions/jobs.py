"""Durable delayed work under the desk's hash tag: a sorted set of due times plus the jobs' payloads.

Due jobs are taken with a lease (pop_due.lua): exactly one instance runs a job now, and if it dies the lease
runs out and another instance retries it. A restart loses nothing. ARCHITECTURE.md asks for either this or
a job library that runs on Redis Cluster; a sorted set on one tag needs no new dependency and is the same
mechanism the offer deadlines use.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib.resources import files
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from sessions.keys import Keys

log = structlog.get_logger(__name__)

LEASE_MS = 60_000
# Shared with the desk's offer deadlines: any due-time sorted set can be popped this way.
POP_DUE = (files("sessions") / "lua" / "pop_due.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    payload: dict[str, Any]
    attempt: int


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class JobQueue:
    def __init__(self, redis: Redis, keys: Keys, desk: str = "main") -> None:
        self.redis = redis
        self.due_key = keys.jobs_due(desk)
        self.data_key = keys.jobs(desk)
        self._pop_due: AsyncScript = redis.register_script(POP_DUE)

    async def add(self, kind: str, payload: dict[str, Any], at: datetime) -> str:
        job_id = uuid.uuid4().hex
        body = json.dumps({"kind": kind, "payload": payload, "attempt": 0})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.data_key, job_id, body)
            pipe.zadd(self.due_key, {job_id: _ms(at)})
            await pipe.execute()
        return job_id

    async def due(self, now: datetime, limit: int = 50) -> list[Job]:
        ids = await self._pop_due(keys=[self.due_key], args=[_ms(now), LEASE_MS, limit])
        if not ids:
            return []
        bodies = await self.redis.hmget(self.data_key, ids)
        jobs = []
        for raw_id, body in zip(ids, bodies, strict=True):
            job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if body is None:  # finished by another instance meanwhile
                await self.redis.zrem(self.due_key, job_id)
                continue
            data = json.loads(body)
            jobs.append(Job(job_id, data["kind"], data["payload"], int(data["attempt"])))
        return jobs

    async def done(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self.due_key, job.id)
            pipe.hdel(self.data_key, job.id)
            await pipe.execute()

    async def retry(self, job: Job, now: datetime, delay: timedelta) -> None:
        body = json.dumps({"kind": job.kind, "payload": job.payload, "attempt": job.attempt + 1})
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.data_key, job.id, body)
            pipe.zadd(self.due_key, {job.id: _ms(now + delay)})
            await pipe.execute()

    async def pending(self) -> int:
        return int(await self.redis.zcard(self.due_key))


JobHandler = Callable[[Job, datetime], Awaitable[object]]


class JobRunner:
    """Runs due jobs by kind. A job whose kind nobody here handles is left to its lease (another instance,
    or a later version, may know it)."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs
        self._handlers: dict[str, JobHandler] = {}

    def register(self, kind: str, handler: JobHandler) -> None:
        self._handlers[kind] = handler

    async def run_due(self, now: datetime) -> int:
        ran = 0
        for job in await self.jobs.due(now):
            handler = self._handlers.get(job.kind)
            if handler is None:
                continue
            try:
                await handler(job, now)
            except Exception:  # one failing job must not hold up the others; its lease brings it back
                log.exception("jobs.handler_failed", kind=job.kind, job_id=job.id)
            ran += 1
        return ran
