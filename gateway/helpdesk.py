"""Optional: the context package of every handoff POSTed to a team's help desk, signed and retried.

Set HELPDESK_WEBHOOK_URL (and HELPDESK_WEBHOOK_SECRET). Each handoff becomes a durable job; the body is the
JSON context package, signed as ``X-Handoff-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``
with the timestamp in ``X-Handoff-Timestamp`` (the receiver recomputes it and rejects old timestamps, so a
captured request cannot be replayed). A 2xx answer ends the job; anything else is retried with backoff, and
after the last attempt the failure is logged as an error, never dropped silently.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime, timedelta

import aiohttp
import structlog

from handoff.context import Summarizer, build_package
from sessions.jobs import Job, JobQueue
from sessions.store import ConversationNotFound, ConversationStore

log = structlog.get_logger(__name__)

KIND = "helpdesk_package"
MAX_ATTEMPTS = 8


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff(attempt: int) -> timedelta:
    return timedelta(seconds=min(3600, 5 * 2**attempt))


class HelpdeskWebhook:
    def __init__(
        self, url: str, secret: str | None, jobs: JobQueue, store: ConversationStore, summarizer: Summarizer
    ) -> None:
        self.url = url
        self.secret = secret
        self.jobs = jobs
        self.store = store
        self.summarizer = summarizer
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def schedule(self, conversation_id: str, now: datetime) -> None:
        await self.jobs.add(KIND, {"conversation_id": conversation_id}, now)

    async def handle(self, job: Job, now: datetime) -> int:
        """Deliver one package (a job of KIND); 1 when the help desk took it."""
        cid = str(job.payload["conversation_id"])
        try:
            conversation = await self.store.get(cid)
        except ConversationNotFound:
            await self.jobs.done(job)
            return 0
        package = build_package(conversation, await self.store.transcript(cid), self.summarizer)
        body = package.model_dump_json().encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Handoff-Timestamp": timestamp,
                   "X-Handoff-Conversation": cid}
        if self.secret:
            headers["X-Handoff-Signature"] = signature(self.secret, timestamp, body)
        status: int | str
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        ok = isinstance(status, int) and 200 <= status < 300
        if ok:
            await self.jobs.done(job)
            log.info("helpdesk.delivered", conversation_id=cid, attempt=job.attempt + 1)
            return 1
        if job.attempt + 1 >= MAX_ATTEMPTS:
            await self.jobs.done(job)
            log.error("helpdesk.gave_up", conversation_id=cid, attempts=job.attempt + 1, status=status)
            return 0
        await self.jobs.retry(job, now, backoff(job.attempt))
        log.warning("helpdesk.retrying", conversation_id=cid, attempt=job.attempt + 1, status=status)
        return 0

    async def aclose(self) -> None:
        await self._session.close()
