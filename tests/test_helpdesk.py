"""The optional help-desk webhook: every handoff's context package, HMAC-signed, retried until accepted."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from gateway.helpdesk import KIND, HelpdeskWebhook
from handoff.context import BotTurnSummarizer
from sessions.jobs import JobQueue, JobRunner
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests.test_desk import handed_off

SECRET = "helpdesk-shared-secret"


async def test_the_package_is_signed_and_retried_until_the_help_desk_accepts_it(
    start_gateway: Any, bot_server: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def helpdesk(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(received) == 1 else 201)  # down once, then fine

    url = await bot_server(helpdesk)
    base = await start_gateway(clock=lambda: datetime(2026, 11, 27, 15, 0, tzinfo=UTC),
                               helpdesk_webhook_url=url, helpdesk_webhook_secret=SECRET)
    chat = await handed_off(http, base)
    for _ in range(100):  # the gateway's own sweeper makes the first attempt at once
        if received:
            break
        await asyncio.sleep(0.05)
    assert len(received) == 1

    keys = Keys(namespace)
    jobs = JobQueue(redis, keys)
    webhook = HelpdeskWebhook(url, SECRET, jobs, ConversationStore(redis, keys, 3600), BotTurnSummarizer())
    runner = JobRunner(jobs)
    runner.register(KIND, webhook.handle)
    try:
        assert await runner.run_due(datetime.now(UTC)) == 0  # the retry is not due yet
        assert await runner.run_due(datetime.now(UTC) + timedelta(seconds=6)) == 1
    finally:
        await webhook.aclose()
    assert len(received) == 2 and await jobs.pending() == 0

    headers, body = received[1]
    expected = hmac.new(SECRET.encode(), headers["X-Handoff-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["X-Handoff-Signature"] == f"sha256={expected}"
    package = json.loads(body)
    assert package["conversation_id"] == chat.conversation_id
    assert package["escalation"]["reason"] == "high_risk_intent" and package["summary"]["blocker"]
