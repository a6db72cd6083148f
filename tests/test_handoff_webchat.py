"""Handoffs on web chat, end to end: the demo bot, the shipped rules, a real gateway and Redis.

The clock is fixed per test (business hours matter): Friday 2026-11-27 10:00 in New York is a working
morning; Saturday 04:30Z is Friday night there.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from gateway.settings import DEMO_RULES
from handoff.queues import QueueStore
from sessions.keys import Keys
from sessions.models import ConversationState
from sessions.store import ConversationStore
from tests.chat import connect

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
FRIDAY_NIGHT = datetime(2026, 11, 28, 4, 30, tzinfo=UTC)
ADMIN = "admin-token-for-tests-0123456789"


def store_for(redis: Redis, namespace: str) -> ConversationStore:
    return ConversationStore(redis, Keys(namespace), 3600)


async def test_asking_for_a_person_twice_hands_off_and_the_bot_goes_silent(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    first = await chat.say("I want to talk to a human")
    assert "ask again" in first["text"]  # the bot's one offer, not a transfer yet

    notice, frame = await chat.say_until_handoff("agent please")
    assert frame["status"] == "queued" and frame["queue"] == "general" and frame["reason"] == "explicit_request"
    assert frame["queue_name"] == "Customer Support" and frame["mode"] == "live"
    assert "a person will reply here" in notice["text"] and notice["text"] == frame["text"]

    store = store_for(redis, namespace)
    conversation = await store.get(chat.conversation_id)
    assert conversation.state is ConversationState.QUEUED
    assert conversation.handoff is not None
    assert conversation.handoff.reason == "explicit_request"
    assert conversation.handoff.rules_version.startswith("2026-11-30.1+")
    assert conversation.queue == "general" and conversation.priority == 2
    waiting = await QueueStore(redis, Keys(namespace)).waiting("general")
    assert [cid for cid, _ in waiting] == [chat.conversation_id]
    events = [e.type for e in await store.events(chat.conversation_id)]
    assert events[-2:] == ["handoff.escalated", "handoff.queued"]

    # From now on the customer's words are kept for the agent, and the bot says nothing.
    await chat.send("hello? are you still there")
    # The desk may still tell them their place in the queue (a handoff frame); the bot must not speak.
    await chat.assert_silent(0.5, ignoring=lambda f: f["type"] == "handoff" and f.get("position") == 1)
    transcript = await store.transcript(chat.conversation_id)
    assert [m.sender.value for m in transcript][-2:] == ["system", "customer"]


async def test_a_message_sent_during_the_previous_turn_sees_its_outcome(
    start_gateway: Any, bot_server: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    """Two tabs of one conversation and a slow bot: the second request is counted as the second, and the
    message that arrives while the conversation is being handed off gets no bot answer."""

    async def slow_bot(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response({"text": "(bot)", "intent": "human_request", "confidence": 1.0})

    base = await start_gateway(clock=lambda: FRIDAY_MORNING, bot="http", bot_http_url=await bot_server(slow_bot))
    tab1 = await connect(http, base)
    # The first message opens the conversation; the second tab joins while the bot still answers it.
    tab2 = await connect(http, base, token=await tab1.open("I want to talk to a human"))
    await tab2.send("agent please")
    await tab1.recv_until(lambda f: f.get("type") == "handoff", timeout=5)
    await tab2.send("hello? anyone?")
    await asyncio.sleep(0.5)

    transcript = await store_for(redis, namespace).transcript(tab1.conversation_id)
    assert [(m.sender.value, m.channel_metadata.get("policy")) for m in transcript if m.sender.value != "customer"] \
        == [("bot", "deflect"), ("system", None)]
    assert [m.sender.value for m in transcript][-1] == "customer"


async def test_a_card_dispute_goes_to_billing_at_once_with_high_priority(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    _, frame = await chat.say_until_handoff("I want to dispute a charge on my card")
    assert frame["queue"] == "billing" and frame["status"] == "queued"
    assert frame["reason"] == "high_risk_intent" and frame["priority"] == 3
    handoff = (await store_for(redis, namespace).get(chat.conversation_id)).handoff
    assert handoff is not None and handoff.trigger_rule == "high_risk.billing-dispute"
    assert handoff.route_rule == "billing" and "billing disputes" in handoff.explanation


async def test_after_hours_the_customer_is_told_when_the_team_is_back_never_a_live_queue(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_NIGHT)
    chat = await connect(http, base)
    await chat.say("I want to talk to a human")
    notice, frame = await chat.say_until_handoff("a human please")
    assert frame["status"] == "async" and frame["mode"] == "async"
    assert frame["back_at"] == "2026-11-28T10:00:00-05:00"
    assert "closed right now" in notice["text"] and "Saturday 10:00 Eastern Standard Time" in notice["text"]
    assert "queue now" not in notice["text"] and "stay in this chat" not in notice["text"]
    conversation = await store_for(redis, namespace).get(chat.conversation_id)
    assert conversation.state is ConversationState.ASYNC

    # A reload of the page shows where the conversation stands.
    again = await connect(http, base, token=chat.token)
    assert again.session["state"] == "async"
    assert again.session["handoff"]["queue"] == "general" and again.session["handoff"]["mode"] == "async"


async def test_the_bot_keeps_answering_what_it_can(start_gateway: Any, http: aiohttp.ClientSession) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    for question in ("where is my order #12345", "how much is shipping", "thanks"):
        reply = await chat.say(question)
        assert reply["sender"] == "bot"
    assert not [f for f in chat.last_frames if f.get("type") == "handoff"]


async def test_admin_api_reloads_rules_and_refuses_a_broken_set(
    start_gateway: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules_dir)
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, rules_dir=rules_dir, admin_token=ADMIN)
    auth = {"Authorization": f"Bearer {ADMIN}"}

    async with http.get(f"{base}/api/admin/rules") as response:
        assert response.status == 401 and (await response.json())["code"] == "unauthorized"
    async with http.get(f"{base}/api/admin/rules", headers=auth) as response:
        before = await response.json()
    chat = await connect(http, base)  # in flight across the reload

    routing = rules_dir / "routing.yaml"
    routing.write_text(routing.read_text().replace("    queue: billing\n", "    queue: general\n"))
    (rules_dir / "ruleset.yaml").write_text((rules_dir / "ruleset.yaml").read_text().replace(
        '"2026-11-30.1"', '"2026-11-30.2"'))
    async with http.post(f"{base}/api/admin/rules/reload", headers=auth) as response:
        assert response.status == 200
        reloaded = await response.json()
    assert reloaded["changed"] and reloaded["previous_version"] == before["version"]
    assert reloaded["version"].startswith("2026-11-30.2+")

    _, frame = await chat.say_until_handoff("I want to dispute a charge on my card")
    assert frame["queue"] == "general"  # the new routing

    (rules_dir / "queues.yaml").write_text("queues: {}\n")
    async with http.post(f"{base}/api/admin/rules/reload", headers=auth) as response:
        assert response.status == 422
        refused = await response.json()
    assert refused["code"] == "rules_invalid"
    assert refused["problems"][0]["file"] == "queues.yaml" and refused["problems"][0]["field"] == "queues"
    async with http.get(f"{base}/api/admin/rules", headers=auth) as response:
        assert (await response.json())["version"] == reloaded["version"]  # the old set stays in force

    chat = await connect(http, base)
    _, frame = await chat.say_until_handoff("I want to dispute a charge on my card")
    assert frame["queue"] == "general"


async def test_admin_api_is_off_without_a_token(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{gateway}/api/admin/rules/reload") as response:
        assert response.status == 403
        assert (await response.json())["code"] == "admin_disabled"
