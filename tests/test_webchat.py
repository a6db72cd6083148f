"""The /ws/chat protocol end to end: real gateway, real Redis, real websockets."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from redis.asyncio import Redis

from sessions.keys import Keys
from tests.chat import connect


async def test_new_chat_gets_bot_answer_with_ack_and_echo(gateway: str, http: aiohttp.ClientSession) -> None:
    chat = await connect(http, gateway)
    assert chat.session["history"] == [] and chat.session["state"] == "bot"

    reply = await chat.say("Where is my order?", client_id="c-1")

    # The ack and the echo travel separately (the echo comes through the live feed): either may be first.
    ack = next(f for f in chat.last_frames if f["type"] == "ack")
    echo = next(f for f in chat.last_frames if f["type"] == "message" and f["sender"] == "customer")
    assert ack == {"type": "ack", "client_id": "c-1", "id": echo["id"]}
    assert echo["sender"] == "customer" and echo["text"] == "Where is my order?"
    assert reply["sender"] == "bot" and "Account > Orders" in reply["text"]
    assert reply["id"] > echo["id"] and reply["ts"].endswith("+00:00")


async def test_repeated_client_id_is_acknowledged_again_and_stored_once(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    chat = await connect(http, gateway)
    await chat.say("How much is shipping?", client_id="same")
    first_id = next(f for f in chat.last_frames if f["type"] == "ack")["id"]

    await chat.ws.send_json({"type": "message", "text": "How much is shipping?", "client_id": "same"})
    assert await chat.recv() == {"type": "ack", "client_id": "same", "id": first_id}
    await chat.assert_silent()  # no second echo, no second bot answer

    again = await connect(http, gateway, token=chat.token)
    senders = [m["sender"] for m in again.session["history"]]
    assert senders == ["customer", "bot"]


async def test_resume_replays_history_and_after_replays_exactly_the_missed(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    chat = await connect(http, gateway)
    await chat.say("hello")
    seen_until = chat.last_frames[-1]["id"]
    await chat.ws.close()

    other = await connect(http, gateway, token=chat.token)
    await other.say("how do I return something")
    missed = [f for f in other.last_frames if f["type"] == "message"]
    await other.ws.close()

    full = await connect(http, gateway, token=chat.token)
    assert [m["text"] for m in full.session["history"]][:1] == ["hello"]
    assert len(full.session["history"]) == 4

    resumed = await connect(http, gateway, token=chat.token, after=seen_until)
    assert resumed.session["history"] == missed
    assert resumed.session["conversation_id"] == chat.conversation_id


async def test_every_socket_of_a_conversation_sees_each_message_once(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    tab1 = await connect(http, gateway)
    await tab1.say("hello")
    tab2 = await connect(http, gateway, token=tab1.token)
    await tab1.say("reset my password")
    frames = await tab2.recv_until(lambda f: f.get("sender") == "bot")
    assert [f["sender"] for f in frames] == ["customer", "bot"]
    await tab2.assert_silent()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "shout", "text": "hi"}', "unknown_type"),
        ('{"text": "hi", "client_id": "x"}', "unknown_type"),
        ('{"type": "message", "client_id": "x"}', "invalid_frame"),
        ('{"type": "message", "text": "hi"}', "invalid_frame"),
        ('{"type": "message", "text": "hi", "client_id": "has space"}', "invalid_frame"),
        ('{"type": "message", "text": 5, "client_id": "x"}', "invalid_frame"),
        ('{"type": "message", "text": "   ", "client_id": "x"}', "empty_text"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_socket_stays_usable(
    gateway: str, http: aiohttp.ClientSession, raw: str, code: str
) -> None:
    chat = await connect(http, gateway)
    await chat.ws.send_str(raw)
    error = await chat.recv()
    assert error["type"] == "error" and error["code"] == code and error["detail"]

    reply = await chat.say("hello")
    assert reply["sender"] == "bot"
    again = await connect(http, gateway, token=chat.token)
    assert [m["sender"] for m in again.session["history"]] == ["customer", "bot"]


async def test_text_over_the_limit_is_refused_and_names_its_client_id(
    start_gateway: object, http: aiohttp.ClientSession
) -> None:
    base = await start_gateway(max_message_chars=50)  # type: ignore[operator]
    chat = await connect(http, base)
    await chat.ws.send_json({"type": "message", "text": "x" * 51, "client_id": "long-1"})
    error = await chat.recv()
    assert error["code"] == "text_too_long" and error["client_id"] == "long-1"
    assert "50" in error["detail"]
    await chat.assert_silent()
    assert (await chat.say("x" * 50))["sender"] == "bot"


async def test_binary_frame_is_refused(gateway: str, http: aiohttp.ClientSession) -> None:
    chat = await connect(http, gateway)
    await chat.ws.send_bytes(b"\x00\x01")
    assert (await chat.recv())["code"] == "binary_not_supported"
    await chat.ws.send_json({"type": "ping"})
    assert await chat.recv() == {"type": "pong"}


async def test_disallowed_origin_is_refused_before_upgrade(gateway: str, http: aiohttp.ClientSession) -> None:
    handshake = {
        "Origin": "https://evil.example", "Connection": "Upgrade", "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with http.get(f"{gateway}/ws/chat", headers=handshake) as response:
        assert response.status == 403
        assert (await response.json())["code"] == "origin_not_allowed"

    allowed = await connect(http, gateway, headers={"Origin": "http://localhost:8080"})
    assert allowed.session["type"] == "session"


@pytest.mark.parametrize(
    "token",
    ["garbage", "0" * 32 + "." + "a" * 43, "../../etc/passwd"],
)
async def test_unknown_or_forged_token_is_refused(
    gateway: str, http: aiohttp.ClientSession, token: str
) -> None:
    ws = await http.ws_connect(f"{gateway}/ws/chat", params={"token": token})
    error = await ws.receive_json(timeout=5)
    assert error["type"] == "error" and error["code"] == "invalid_token"
    closing = await ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4404


async def test_token_of_one_conversation_with_another_secret_is_refused(
    gateway: str, http: aiohttp.ClientSession
) -> None:
    chat = await connect(http, gateway)
    forged = chat.conversation_id + "." + "A" * 43
    ws = await http.ws_connect(f"{gateway}/ws/chat", params={"token": forged})
    assert (await ws.receive_json(timeout=5))["code"] == "invalid_token"


async def test_malformed_after_is_a_400(gateway: str, http: aiohttp.ClientSession) -> None:
    chat = await connect(http, gateway)
    async with http.get(f"{gateway}/ws/chat", params={"token": chat.token, "after": "yesterday"}) as response:
        assert response.status == 400
        assert (await response.json())["code"] == "invalid_after"


async def test_burst_of_sessions_waits_for_redis_connections_instead_of_failing(
    start_gateway: object, http: aiohttp.ClientSession
) -> None:
    base = await start_gateway(redis_max_connections=3,  # type: ignore[operator]
                               chat_new_conversations_per_hour_per_address=100)
    chats = await asyncio.gather(*(connect(http, base) for _ in range(30)))
    replies = await asyncio.gather(*(chat.say("how much is shipping") for chat in chats))
    assert all("Shipping is free" in r["text"] for r in replies)


async def test_message_to_an_expired_conversation_ends_the_socket_cleanly(
    gateway: str, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    chat = await connect(http, gateway)
    await chat.say("hello")
    await redis.delete(Keys(namespace).conversation(chat.conversation_id))  # as if it expired
    await chat.ws.send_json({"type": "message", "text": "hello?", "client_id": "late"})
    error = await chat.recv()
    assert error["code"] == "conversation_ended" and error["client_id"] == "late"
    closing = await chat.ws.receive(timeout=5)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4404
