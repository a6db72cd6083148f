"""/ws/agent: every push about a conversation passes the access rule when it is sent, and a follow misses
nothing appended after the id it names (or, for held conversations, after "hello")."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp
from redis.asyncio import Redis

from handoff.agents import AgentStore
from sessions.keys import Keys
from sessions.models import Direction, Message, SenderKind
from sessions.store import ConversationStore
from tests.test_desk import AgentClient, handed_off

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


async def agent_socket(http: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{base}/ws/agent")
    await ws.send_json({"type": "auth", "token": token})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello", hello
    return ws


async def frames_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Every frame that arrives within ``seconds`` (stops early if the socket closes)."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            raw = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if raw.type is not aiohttp.WSMsgType.TEXT:
            break
        seen.append(raw.json())
    return seen


def customer_message(cid: str, text: str) -> Message:
    return Message(conversation_id=cid, direction=Direction.INBOUND, sender=SenderKind.CUSTOMER, text=text,
                   channel="webchat")


async def test_a_follower_who_loses_access_is_unfollowed_and_hears_nothing_more(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    agents = AgentStore(redis, Keys(namespace))
    _, alex_token = await agents.add("Alex", ["billing"], ["en"], [])
    _, sam_token = await agents.add("Sam", ["billing"], ["en"], [])
    alex, sam = AgentClient(http, base, alex_token), AgentClient(http, base, sam_token)
    await alex.online()  # Sam is not online: the offer goes to Alex, yet Sam may watch the queue
    chat = await handed_off(http, base)
    cid = chat.conversation_id
    await chat.recv_until(lambda f: f.get("status") == "offered")

    ws = await agent_socket(http, base, sam_token)
    await ws.send_json({"type": "follow", "conversation_id": cid})
    async with asyncio.timeout(5):  # without "after", a follow starts from when it is live
        while (await ws.receive_json()).get("type") != "following":
            pass
    await chat.send("is anyone there?")
    async with asyncio.timeout(5):
        while True:
            frame = await ws.receive_json()
            if frame.get("type") == "message" and frame.get("text") == "is anyone there?":
                break

    assert (await alex.call("POST", f"/api/conversations/{cid}/claim"))[0] == 200
    await chat.send("my card ends in 4242")
    assert (await alex.call("POST", f"/api/conversations/{cid}/messages", {"text": "Which charge?"}))[0] == 201
    assert (await sam.call("GET", f"/api/conversations/{cid}"))[0] == 403

    after_claim = [f for f in await frames_for(ws, 1.5) if f.get("type") != "queues"]
    unfollowed = [f for f in after_claim if f["type"] == "unfollowed"]
    assert unfollowed == [{"type": "unfollowed", "conversation_id": cid, "code": "another_agents_conversation",
                           "detail": unfollowed[0]["detail"] if unfollowed else None}], after_claim
    # Nothing of the conversation after the claim: not the "Alex joined" notice, the customer or Alex.
    assert [f for f in after_claim if f.get("conversation_id") == cid and f["type"] != "unfollowed"] == []

    await ws.send_json({"type": "follow", "conversation_id": cid})
    again = [f for f in await frames_for(ws, 1.0) if f.get("type") != "queues"]
    assert [(f["type"], f.get("code")) for f in again] == [("error", "another_agents_conversation")]
    await ws.close()


async def _three_arrive_once(ws: aiohttp.ClientWebSocketResponse, cid: str, texts: list[str]) -> None:
    got: list[str] = []
    async with asyncio.timeout(5):
        while len(got) < len(texts):
            frame = await ws.receive_json()
            if frame.get("type") == "message" and frame.get("conversation_id") == cid:
                got.append(frame["text"])
    got += [f["text"] for f in await frames_for(ws, 0.1) if f.get("type") == "message"]
    assert got == texts


async def test_a_follow_after_an_id_misses_nothing_appended_after_it(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    chat = await handed_off(http, base)  # nobody online: it stays queued, and Alex serves the queue
    cid = chat.conversation_id
    store = ConversationStore(redis, Keys(namespace), 3600)
    for attempt in range(20):
        after = (await store.transcript(cid))[-1].id
        ws = await agent_socket(http, base, token)
        await ws.send_json({"type": "follow", "conversation_id": cid, "after": after})
        texts = [f"try {attempt} message {n}" for n in range(3)]
        for text in texts:
            await store.append(customer_message(cid, text))
        await _three_arrive_once(ws, cid, texts)
        await ws.close()


async def test_messages_just_after_connecting_reach_the_agent_who_holds_the_conversation(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    _, token = await AgentStore(redis, Keys(namespace)).add("Alex", ["billing"], ["en"], [])
    alex = AgentClient(http, base, token)
    await alex.online()
    chat = await handed_off(http, base)
    cid = chat.conversation_id
    assert (await alex.call("POST", f"/api/conversations/{cid}/claim"))[0] == 200
    store = ConversationStore(redis, Keys(namespace), 3600)
    for attempt in range(20):
        ws = await agent_socket(http, base, token)  # held conversations are followed before "hello"
        texts = [f"try {attempt} message {n}" for n in range(3)]
        for text in texts:
            await store.append(customer_message(cid, text))
        await _three_arrive_once(ws, cid, texts)
        await ws.close()


async def test_the_console_on_any_port_may_open_the_agent_socket_and_a_foreign_page_may_not(
    start_gateway: Any, http: aiohttp.ClientSession,
) -> None:
    base = await start_gateway()  # not on 8080: the default ALLOWED_ORIGINS do not name it
    ws = await http.ws_connect(f"{base}/ws/agent", headers={"Origin": base})
    await ws.close()
    try:
        await http.ws_connect(f"{base}/ws/agent", headers={"Origin": "https://evil.example"})
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a foreign page opened the agent socket")
