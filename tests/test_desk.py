"""The agent desk end to end: a customer on web chat, agents on the REST API, real Redis and gateway."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway.settings import DEMO_RULES
from handoff.agents import AgentStore
from handoff.desk import Desk
from handoff.loader import load_rules
from handoff.queues import QueueStore
from sessions.keys import Keys
from sessions.models import ConversationState
from sessions.store import ConversationStore
from tests.chat import ChatClient, connect

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


class AgentClient:
    """An agent's side of the API, as the console or a help-desk integration uses it."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, f"{self.base}{path}", json=body, headers=self.headers) as response:
            return response.status, await response.json()

    async def online(self, capacity: int = 2) -> None:
        status, _ = await self.call("POST", "/api/agents/me/presence", {"status": "online", "capacity": capacity})
        assert status == 200


async def add_agent(redis: Redis, namespace: str, name: str, skills: list[str] | None = None) -> str:
    _, token = await AgentStore(redis, Keys(namespace)).add(name, skills or [], ["en"], [])
    return token


async def handed_off(http: aiohttp.ClientSession, base: str, text: str = "I want to dispute a charge on my card") -> ChatClient:
    chat = await connect(http, base)
    await chat.say_until_handoff(text)
    return chat


async def test_api_needs_a_valid_agent_token(gateway: str, http: aiohttp.ClientSession) -> None:
    for headers in ({}, {"Authorization": "Bearer hga_not-a-real-token"}, {"Authorization": "Basic x"},
                    {"Authorization": "Bearer hga_\u00e9t\u00e9"}):
        async with http.get(f"{gateway}/api/queues", headers=headers) as response:
            assert response.status == 401
            assert (await response.json())["code"] == "unauthorized"


async def test_a_handoff_from_claim_to_resolve_back_to_the_bot(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    await chat.say("where is my order #123456")
    await chat.say_until_handoff("I want to dispute a charge on my card")
    agent = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    await agent.online()

    # The desk offers it to the only agent online, who accepts by claiming it.
    await chat.recv_until(lambda f: f.get("type") == "handoff" and f.get("status") == "offered")
    status, body = await agent.call("GET", "/api/conversations?state=offered")
    assert [c["id"] for c in body["conversations"]] == [chat.conversation_id]
    status, body = await agent.call("GET", "/api/queues")
    billing = next(q for q in body["queues"] if q["id"] == "billing")
    assert billing["depth"] == 0 and billing["agents_online"] == 1 and billing["you_serve"]

    status, body = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    assert status == 200, body
    context = body["context"]
    assert context["summary"]["goal"] == 'order_status: "where is my order #123456"'
    assert context["summary"]["collected"] == {"order_number": "123456"}
    assert "billing disputes are handled by people" in context["summary"]["blocker"]
    assert context["escalation"]["reason"] == "high_risk_intent" and context["escalation"]["queue"] == "billing"
    assert context["articles"] == ["KB-101"] and context["verification"]["reverify_before_account_changes"]
    assert [m["sender"] for m in context["transcript"]][:2] == ["customer", "bot"]

    frames = await chat.recv_until(lambda f: f.get("type") == "handoff")
    assert frames[-1]["status"] == "assigned" and frames[-1]["agent_name"] == "Alex"
    assert any(f.get("sender") == "system" and "Alex from our team has joined" in f["text"] for f in frames)

    status, body = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/messages",
                                    {"text": "Hi, I'm Alex. Which charge is it?"})
    assert status == 201
    frame = (await chat.recv_until(lambda f: f.get("sender") == "agent"))[-1]
    assert frame["text"] == "Hi, I'm Alex. Which charge is it?"

    await chat.send("the one from Tuesday")
    await chat.assert_silent(0.4)  # the bot stays out of it

    status, body = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/resolve",
                                    {"outcome": "refund issued", "back_to_bot": True})
    assert status == 200 and body["conversation"]["state"] == "bot"
    frames = await chat.recv_until(lambda f: f.get("type") == "handoff")
    assert frames[-1]["status"] == "resolved" and frames[-1]["back_to_bot"] is True
    reply = await chat.say("how much is shipping")
    assert reply["sender"] == "bot"  # the bot is back
    state = await AgentStore(redis, Keys(namespace)).state((await AgentStore(redis, Keys(namespace)).all())[0].id)
    assert state.active == 0


async def test_another_agents_conversation_is_off_limits(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await handed_off(http, base)
    first = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    second = AgentClient(http, base, await add_agent(redis, namespace, "Sam", ["billing"]))
    outsider = AgentClient(http, base, await add_agent(redis, namespace, "Kim", []))
    for agent in (first, second, outsider):
        await agent.online()
    cid = chat.conversation_id

    status, body = await outsider.call("POST", f"/api/conversations/{cid}/claim")
    assert status == 403 and body["code"] == "not_your_queue"
    assert (await first.call("POST", f"/api/conversations/{cid}/claim"))[0] == 200
    status, body = await second.call("POST", f"/api/conversations/{cid}/claim")
    assert status == 409 and body["code"] == "claimed_by_another"
    for method, path, payload in (("GET", "", None), ("POST", "/messages", {"text": "hi"}),
                                  ("POST", "/resolve", {}), ("POST", "/transfer", {"queue": "general"})):
        status, body = await second.call(method, f"/api/conversations/{cid}{path}", payload)
        assert status == 403 and body["code"] == "another_agents_conversation", (path, body)

    bot_only = await connect(http, base)  # still with the bot: private to the customer
    await bot_only.say("my card number is 4111 1111 1111 1111")
    status, body = await first.call("GET", f"/api/conversations/{bot_only.conversation_id}")
    assert status == 403 and body["code"] == "not_handed_off"

    status, body = await first.call("POST", f"/api/conversations/{cid}/messages", {"text": ""})
    assert status == 400 and body["code"] == "invalid_body" and "text" in body["detail"]
    status, body = await first.call("POST", f"/api/conversations/{cid}/transfer", {"queue": "nowhere"})
    assert status == 422 and body["code"] == "unknown_queue"
    status, body = await first.call("POST", "/api/conversations/ffffffff/claim")
    assert status == 404 and body["code"] == "conversation_not_found"


async def test_warm_transfer_carries_the_note(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await handed_off(http, base)
    billing = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    accounts = AgentClient(http, base, await add_agent(redis, namespace, "Robin", ["accounts"]))
    await billing.online()
    await accounts.online()
    cid = chat.conversation_id
    await billing.call("POST", f"/api/conversations/{cid}/claim")
    status, body = await billing.call("POST", f"/api/conversations/{cid}/transfer",
                                      {"queue": "accounts", "note": "refund approved, needs account unlock"})
    assert status == 200 and body["conversation"]["state"] == "queued" and body["conversation"]["queue"] == "accounts"
    await chat.recv_until(lambda f: f.get("sender") == "system" and "Account Services" in f["text"])

    status, body = await accounts.call("POST", f"/api/conversations/{cid}/claim")
    assert status == 200
    assert body["context"]["notes"][0]["note"] == "refund approved, needs account unlock"
    assert body["context"]["notes"][0]["from_agent"] == "Alex"


async def test_an_agent_who_leaves_hands_conversations_back_to_the_head_of_the_queue(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    first = await handed_off(http, base)
    second = await handed_off(http, base)
    agent = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    await agent.online()
    assert (await agent.call("POST", f"/api/conversations/{second.conversation_id}/claim"))[0] == 200

    status, body = await agent.call("POST", "/api/agents/me/presence", {"status": "offline"})
    assert status == 200 and body["handed_back"] == [second.conversation_id]
    waiting = await QueueStore(redis, Keys(namespace)).waiting("billing")
    assert [cid for cid, _ in waiting] == [second.conversation_id, first.conversation_id]  # back at the head
    await second.recv_until(lambda f: f.get("sender") == "system" and "had to leave" in f["text"])
    conversation = await ConversationStore(redis, Keys(namespace), 60).get(second.conversation_id)
    assert conversation.state is ConversationState.QUEUED and conversation.notes[0]["kind"] == "hand_back"


async def test_a_dropped_agent_expires_and_their_conversation_goes_back(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await handed_off(http, base)
    agent = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    await agent.online()
    await agent.call("POST", f"/api/conversations/{chat.conversation_id}/claim")

    keys = Keys(namespace)
    store = ConversationStore(redis, keys, 3600)
    desk = Desk(redis=redis, keys=keys, store=store, agents=AgentStore(redis, keys), queues=QueueStore(redis, keys))
    rules = load_rules(DEMO_RULES)
    assert await desk.go_offline_if_expired(datetime.now(UTC), rules) == []  # heartbeat still fresh
    gone = await desk.go_offline_if_expired(datetime.now(UTC) + timedelta(seconds=61), rules)
    assert len(gone) == 1
    assert (await store.get(chat.conversation_id)).state is ConversationState.QUEUED
    _, body = await agent.call("GET", "/api/agents/me")
    assert body["presence"]["status"] == "offline" and body["presence"]["active"] == 0


async def test_fifty_concurrent_claimers_never_assign_twice_and_lose_nothing(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chats = await asyncio.gather(*(handed_off(http, base) for _ in range(20)))
    ids = {c.conversation_id for c in chats}
    agents = [AgentClient(http, base, await add_agent(redis, namespace, f"agent{i}", ["billing"])) for i in range(50)]
    await asyncio.gather(*(a.online(capacity=1) for a in agents))

    async def grab(agent: AgentClient) -> list[str]:
        won: list[str] = []
        for cid in random.sample(sorted(ids), len(ids)):
            status, body = await agent.call("POST", f"/api/conversations/{cid}/claim")
            assert status in (200, 409), body
            if status == 200:
                won.append(cid)
        return won

    results = await asyncio.gather(*(grab(a) for a in agents))
    winners = [cid for won in results for cid in won]
    assert sorted(winners) == sorted(ids)  # every conversation assigned, none twice
    assert all(len(won) <= 1 for won in results)  # nobody over capacity
    store = ConversationStore(redis, Keys(namespace), 3600)
    holders = {cid: (await store.get(cid)).agent for cid in ids}
    assignments = await redis.hgetall(Keys(namespace).assignments("main"))
    assert {k.decode(): v.decode() for k, v in assignments.items()} == holders
    assert await QueueStore(redis, Keys(namespace)).waiting("billing") == []


async def test_openapi_document_lists_the_api(gateway: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway}/api/openapi.json") as response:
        document = await response.json()
    assert document["openapi"].startswith("3.")
    for path in ("/api/agents/me/presence", "/api/queues", "/api/conversations", "/api/conversations/{id}",
                 "/api/conversations/{id}/claim", "/api/conversations/{id}/messages",
                 "/api/conversations/{id}/transfer", "/api/conversations/{id}/resolve"):
        assert path in document["paths"], path
    presence = document["paths"]["/api/agents/me/presence"]["post"]["requestBody"]
    assert presence["content"]["application/json"]["schema"]["properties"]["status"]


def test_agents_cli_adds_lists_and_removes(redis_url: str, namespace: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(REDIS_URL=redis_url, REDIS_NAMESPACE=namespace, LOG_FORMAT="json")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", "agents", *args], env=env, capture_output=True,
                              text=True, timeout=30, check=False)

    added = run("add", "Alex", "--skills", "billing,vip", "--languages", "en,de", "--queues", "billing")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    assert token.startswith("hga_") and len(token) > 40
    assert run("add", "Alex").returncode == 1  # names are unique
    listed = run("list")
    assert "Alex" in listed.stdout and "skills=billing,vip" in listed.stdout and token not in listed.stdout
    removed = run("remove", "Alex")
    assert removed.returncode == 0 and "0 conversation(s) back in their queues" in removed.stdout
    assert "no agents" in run("list").stdout
    assert run("remove", "Alex").returncode == 1


async def test_a_customer_returning_soon_after_a_resolve_goes_back_to_the_same_agent(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await handed_off(http, base)
    alex = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    sam = AgentClient(http, base, await add_agent(redis, namespace, "Sam", ["billing"]))
    await alex.online(capacity=1)
    await chat.recv_until(lambda f: f.get("status") == "offered")
    assert (await alex.call("POST", f"/api/conversations/{chat.conversation_id}/claim"))[0] == 200
    await alex.call("POST", f"/api/conversations/{chat.conversation_id}/resolve", {"outcome": "answered"})
    await sam.online(capacity=5)  # more free capacity than Alex, but Alex helped this customer

    await chat.send("sorry, one more question about that charge")
    frames = await chat.recv_until(lambda f: f.get("status") == "offered")
    assert frames[-1]["agent_name"] == "Alex"
    assert any(f.get("sender") == "system" and "Welcome back" in f["text"] for f in frames)
    assert not [f for f in frames if f.get("sender") == "bot"]


async def test_after_the_return_window_the_bot_answers_again(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, return_window_seconds=0)
    chat = await handed_off(http, base)
    alex = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    await alex.online(capacity=1)
    await chat.recv_until(lambda f: f.get("status") == "offered")
    await alex.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    await alex.call("POST", f"/api/conversations/{chat.conversation_id}/resolve", {"outcome": "answered"})
    assert (await chat.say("how much is shipping"))["sender"] == "bot"
