"""Offers: the desk offers each waiting conversation to the best free agent; unaccepted offers move on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway.settings import DEMO_RULES
from handoff.agents import AgentStore
from handoff.desk import Desk
from handoff.loader import load_rules
from handoff.offers import Dispatcher
from handoff.queues import QueueStore
from sessions.keys import Keys
from sessions.models import ConversationState
from sessions.store import ConversationStore
from tests.test_desk import AgentClient, handed_off

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def dispatcher_for(redis: Redis, namespace: str) -> tuple[Dispatcher, ConversationStore]:
    keys = Keys(namespace)
    store = ConversationStore(redis, keys, 3600)
    desk = Desk(redis=redis, keys=keys, store=store, agents=AgentStore(redis, keys), queues=QueueStore(redis, keys))
    return Dispatcher(desk, offer_seconds=30), store


async def until(predicate: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_a_waiting_conversation_is_offered_to_the_best_agent_who_accepts(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    agents = AgentStore(redis, Keys(namespace))
    _, busy_token = await agents.add("Busy", ["billing"], ["en"], [])
    _, free_token = await agents.add("Free", ["billing"], ["en"], [])
    busy, free = AgentClient(http, base, busy_token), AgentClient(http, base, free_token)
    await busy.online(capacity=1)
    await free.online(capacity=3)  # most free capacity wins

    chat = await handed_off(http, base)
    frames = await chat.recv_until(lambda f: f.get("type") == "handoff" and f.get("status") == "offered")
    assert frames[-1]["agent_name"] == "Free"
    store = ConversationStore(redis, Keys(namespace), 60)
    assert (await store.get(chat.conversation_id)).state is ConversationState.OFFERED

    status, body = await busy.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    assert status == 409 and body["code"] == "offered_to_another"
    status, body = await free.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    assert status == 200 and body["conversation"]["state"] == "assigned"
    _, me = await free.call("GET", "/api/agents/me")
    assert me["presence"]["active"] == 1  # the offer's reserved slot became the conversation


async def test_an_offer_not_accepted_in_time_goes_to_the_next_agent(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    agents = AgentStore(redis, Keys(namespace))
    _, first_token = await agents.add("First", ["billing"], ["en"], [])
    first = AgentClient(http, base, first_token)
    await first.online(capacity=1)
    chat = await handed_off(http, base)
    await chat.recv_until(lambda f: f.get("status") == "offered" and f.get("agent_name") == "First")

    _, second_token = await agents.add("Second", ["billing"], ["en"], [])
    second = AgentClient(http, base, second_token)
    await second.online(capacity=1)
    dispatcher, _ = dispatcher_for(redis, namespace)
    assert await dispatcher.expire_offers(datetime.now(UTC)) == 0  # not due yet
    assert await dispatcher.expire_offers(datetime.now(UTC) + timedelta(seconds=31)) == 1
    await dispatcher.dispatch(load_rules(DEMO_RULES), FRIDAY_MORNING)
    frames = await chat.recv_until(lambda f: f.get("status") == "offered" and f.get("agent_name") == "Second")
    assert frames[-1]["status"] == "offered"
    _, me = await first.call("GET", "/api/agents/me")
    assert me["presence"]["active"] == 0  # the lapsed offer freed the slot


async def test_declining_passes_the_offer_on_and_language_picks_the_agent(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    agents = AgentStore(redis, Keys(namespace))
    _, en_token = await agents.add("English", ["billing"], ["en"], [])
    _, de_token = await agents.add("Deutsch", ["billing"], ["de", "en"], [])
    english, deutsch = AgentClient(http, base, en_token), AgentClient(http, base, de_token)
    await english.online(capacity=5)
    await deutsch.online(capacity=1)
    chat = await handed_off(http, base, "Ich möchte eine Abbuchung auf meiner Karte anfechten")
    await chat.recv_until(lambda f: f.get("status") == "offered" and f.get("agent_name") == "Deutsch")

    status, _ = await deutsch.call("POST", f"/api/conversations/{chat.conversation_id}/decline")
    assert status == 200
    await chat.recv_until(lambda f: f.get("status") == "offered" and f.get("agent_name") == "English")
    status, body = await deutsch.call("POST", f"/api/conversations/{chat.conversation_id}/decline")
    assert status == 409 and body["code"] == "no_offer"


async def test_nothing_is_offered_while_the_queue_is_closed(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    night = datetime(2026, 11, 28, 4, 30, tzinfo=UTC)
    base = await start_gateway(clock=lambda: night)
    chat = await handed_off(http, base)  # an after-hours follow-up in the backlog
    dispatcher, store = dispatcher_for(redis, namespace)
    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    await AgentClient(http, base, token).online()
    assert await dispatcher.dispatch(load_rules(DEMO_RULES), night) == []
    assert (await store.get(chat.conversation_id)).state is ConversationState.ASYNC


async def test_agent_socket_streams_offers_and_the_customers_words(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    refused = await http.ws_connect(f"{base}/ws/agent")
    await refused.send_json({"type": "auth", "token": "hga_wrong"})
    assert (await refused.receive_json(timeout=5))["code"] == "unauthorized"
    await refused.receive(timeout=5)
    assert refused.close_code == 4401

    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    agent = AgentClient(http, base, token)
    ws = await http.ws_connect(f"{base}/ws/agent")
    await ws.send_json({"type": "auth", "token": token})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello" and hello["agent"]["name"] == "Alex"
    first_queues = await ws.receive_json(timeout=5)
    assert first_queues["type"] == "queues"
    assert {q["id"] for q in first_queues["queues"]} >= {"general", "billing"}

    async def next_frame(kind: str) -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = await ws.receive_json(timeout=5)
            if frame["type"] == kind:
                return frame

    await agent.online()
    chat = await handed_off(http, base)
    offer = await next_frame("offer")
    assert offer["conversation_id"] == chat.conversation_id and offer["queue"] == "billing"
    await agent.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    assert (await next_frame("assigned"))["conversation_id"] == chat.conversation_id
    await chat.ws.send_json({"type": "typing"})
    typing = await next_frame("typing")
    assert typing == {"type": "typing", "conversation_id": chat.conversation_id, "sender": "customer"}
    await ws.send_json({"type": "typing", "conversation_id": chat.conversation_id})
    await chat.recv_until(lambda f: f == {"type": "typing", "sender": "agent"})
    await chat.send("it was the charge on Tuesday")
    said = await next_frame("message")
    while said["sender"] != "customer":
        said = await next_frame("message")
    assert said["text"] == "it was the charge on Tuesday" and said["conversation_id"] == chat.conversation_id
    await agent.call("POST", f"/api/conversations/{chat.conversation_id}/resolve", {"outcome": "done"})
    assert (await next_frame("released"))["conversation_id"] == chat.conversation_id

    # Another agent's conversation cannot be followed from the socket either.
    await agent.call("POST", "/api/agents/me/presence", {"status": "away"})
    _, sam_token = await AgentStore(redis, Keys(namespace)).add("Sam", ["billing"], ["en"], [])
    sam = AgentClient(http, base, sam_token)
    await sam.online()
    other = await handed_off(http, base)
    await other.recv_until(lambda f: f.get("status") == "offered" and f.get("agent_name") == "Sam")
    assert (await sam.call("POST", f"/api/conversations/{other.conversation_id}/claim"))[0] == 200
    await ws.send_json({"type": "follow", "conversation_id": other.conversation_id})
    assert (await next_frame("error"))["code"] == "another_agents_conversation"
    await ws.close()


async def test_a_queue_entry_without_a_waiting_conversation_is_dropped(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    """An instance that died between queueing and handing off leaves an entry; the desk removes it."""
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    queues = QueueStore(redis, Keys(namespace))
    await queues.enqueue("billing", "gone-conversation", 3, datetime.now(UTC) - timedelta(minutes=5))
    await queues.enqueue("billing", "just-queued", 3, datetime.now(UTC))  # a handoff in progress: kept
    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    await AgentClient(http, base, token).online()
    dispatcher, _ = dispatcher_for(redis, namespace)
    await dispatcher.dispatch(load_rules(DEMO_RULES), FRIDAY_MORNING)
    assert [cid for cid, _ in await queues.waiting("billing")] == ["just-queued"]
