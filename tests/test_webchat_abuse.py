"""Abuse limits and hostile input on /ws/chat, and the gateway's own origin: real gateway, Redis, websockets."""

from __future__ import annotations

import asyncio
import uuid
from ipaddress import ip_network
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from structlog.testing import capture_logs

from channels.webchat.access import client_address
from channels.webchat.socket import _raised_by_redis_client
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests.chat import ChatClient, connect
from tests.test_twilio_messaging import post, sms_form
from tests.test_twilio_messaging import start as start_twilio


async def keys_of(redis: Redis, namespace: str) -> list[bytes]:
    return [k async for k in redis.scan_iter(match=f"{namespace}:*", count=500)]


async def send_raw(chat: ChatClient, raw: str) -> dict[str, Any]:
    await chat.ws.send_str(raw)
    return await chat.recv()


async def assert_usable(chat: ChatClient) -> None:
    await chat.ws.send_json({"type": "ping"})
    assert await chat.recv() == {"type": "pong"}


# -- 1. idle connections, message rate, new conversations per address, the cap -------------------------

async def test_idle_connections_store_nothing_and_the_first_message_opens_the_conversation(
    gateway: str, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    idle = await asyncio.gather(*(connect(http, gateway) for _ in range(25)))
    assert all(c.session == {"type": "session", "conversation_id": None, "token": None, "state": "bot",
                             "history": []} for c in idle)
    await idle[0].ws.send_json({"type": "typing"})
    await assert_usable(idle[0])
    assert await keys_of(redis, namespace) == []

    chat = idle[0]
    await chat.ws.send_json({"type": "message", "text": "Where is my order?", "client_id": "first"})
    opened = await chat.ws.receive_json(timeout=5)  # the session frame with the token comes first
    assert opened["type"] == "session" and opened["token"] and opened["conversation_id"]
    assert opened["history"] == [] and opened["state"] == "bot"
    frames = await chat.recv_until(lambda f: f.get("sender") == "bot")
    assert {"type": "ack", "client_id": "first", "id": frames[0]["id"]} in frames

    again = await connect(http, gateway, token=opened["token"])
    assert [m["sender"] for m in again.session["history"]] == ["customer", "bot"]


async def test_messages_over_the_rate_get_an_error_frame_on_every_socket_and_store_nothing(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(chat_message_burst=3, chat_messages_per_minute=6)
    chat = await connect(http, base)
    await chat.say("hello")  # opens the conversation; its bucket starts full
    for text in ("how much is shipping", "reset my password", "thanks"):
        await chat.say(text)

    await chat.ws.send_json({"type": "message", "text": "spam", "client_id": "over"})
    refused = await chat.recv()
    assert refused["code"] == "rate_limited" and refused["client_id"] == "over"
    assert 1 <= refused["retry_after_seconds"] <= 10
    await assert_usable(chat)

    other_tab = await connect(http, base, token=chat.token)  # the bucket is the conversation's, in Redis
    await other_tab.ws.send_json({"type": "message", "text": "spam", "client_id": "over2"})
    assert (await other_tab.recv())["code"] == "rate_limited"

    transcript = await ConversationStore(redis, Keys(namespace), 60).transcript(chat.conversation_id)
    assert [m.text for m in transcript if m.sender.value == "customer"] == [
        "hello", "how much is shipping", "reset my password", "thanks"]


async def test_new_conversations_per_address_are_limited_and_a_refused_one_stores_nothing(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(chat_new_conversations_per_hour_per_address=2)
    for _ in range(2):
        await (await connect(http, base)).say("hello")
    before = sorted(await keys_of(redis, namespace))

    third = await connect(http, base)  # connecting is free: nothing is stored until a message
    await third.ws.send_json({"type": "message", "text": "hello", "client_id": "c-3"})
    refused = await third.recv()
    assert refused["code"] == "rate_limited" and refused["client_id"] == "c-3"
    assert 1700 <= refused["retry_after_seconds"] <= 1800  # one conversation every 30 minutes
    assert third.session["token"] is None
    await assert_usable(third)
    assert sorted(await keys_of(redis, namespace)) == before

    # X-Forwarded-For is not believed from a peer that is not a trusted proxy.
    spoofed = await connect(http, base, headers={"X-Forwarded-For": "203.0.113.9"})
    await spoofed.ws.send_json({"type": "message", "text": "hello", "client_id": "c-4"})
    assert (await spoofed.recv())["code"] == "rate_limited"


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance(
    start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    base = await start_gateway(chat_new_conversations_per_hour_per_address=1, trusted_proxies="127.0.0.1")
    first = await connect(http, base, headers={"X-Forwarded-For": "203.0.113.9"})
    await first.say("hello")
    second = await connect(http, base, headers={"X-Forwarded-For": "198.51.100.4"})
    assert (await second.say("hello"))["sender"] == "bot"
    again = await connect(http, base, headers={"X-Forwarded-For": "198.51.100.4"})
    await again.ws.send_json({"type": "message", "text": "hello", "client_id": "c"})
    assert (await again.recv())["code"] == "rate_limited"


def test_client_address_reads_forwarded_for_from_the_right_and_only_through_trusted_proxies() -> None:
    proxies = (ip_network("10.0.0.0/8"),)
    assert client_address("10.0.0.5", ["1.2.3.4, 5.6.7.8"], ()) == "10.0.0.5"
    assert client_address("10.0.0.5", ["1.2.3.4, 5.6.7.8"], proxies) == "5.6.7.8"
    assert client_address("10.0.0.5", ["1.2.3.4, 10.0.0.9"], proxies) == "1.2.3.4"
    assert client_address("5.6.7.8", ["1.2.3.4"], proxies) == "5.6.7.8"
    assert client_address("2001:db8::1", [], ()) == "2001:db8::/64"


async def test_a_full_conversation_refuses_more_messages_with_a_clear_error(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(max_messages_per_conversation=10, chat_message_burst=100)
    chat = await connect(http, base)
    questions = ["Where is my order?", "how much is shipping", "reset my password", "can I return an item",
                 "do you take credit cards"]
    for i, question in enumerate(questions):  # each a customer message and the bot's answer: 10 in all
        await chat.say(question, client_id=f"m{i}")
    await chat.ws.send_json({"type": "message", "text": "one more", "client_id": "full"})
    refused = await chat.recv()
    assert refused["code"] == "conversation_full" and refused["client_id"] == "full"
    assert "10 messages" in refused["detail"]
    await chat.ws.send_json({"type": "message", "text": questions[4], "client_id": "m4"})  # a resend: acked
    assert (await chat.recv())["type"] == "ack"
    await assert_usable(chat)
    assert len(await ConversationStore(redis, Keys(namespace), 60).transcript(chat.conversation_id)) == 10


# -- 2. malformed input ----------------------------------------------------------------------------------

async def test_a_lone_surrogate_or_deep_nesting_gets_an_error_frame_and_the_socket_stays_usable(
    gateway: str, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    chat = await connect(http, gateway)
    lone = await send_raw(chat, '{"type": "message", "text": "hi \\ud800", "client_id": "s-1"}')
    assert lone["type"] == "error" and lone["code"] == "invalid_json" and lone["client_id"] == "s-1"
    deep = await send_raw(chat, "[" * 3000 + "]" * 3000)
    assert deep["type"] == "error" and deep["code"] == "invalid_json"
    deep_field = await send_raw(chat, '{"type": "message", "client_id": "s-2", "text": ' + "[" * 3000 + "]" * 3000
                                + "}")
    assert deep_field["code"] == "invalid_json"
    await assert_usable(chat)
    assert await keys_of(redis, namespace) == []

    # A surrogate pair is a real character (an emoji) and is stored as one.
    await chat.send("thanks 😀")  # sent as the escaped pair "\ud83d\ude00"
    history = (await connect(http, gateway, token=chat.token)).session["history"]
    assert history[0]["text"] == "thanks 😀"


async def test_an_after_out_of_a_stream_ids_range_is_a_400(gateway: str, http: aiohttp.ClientSession) -> None:
    chat = await connect(http, gateway)
    await chat.say("hello")
    top = "18446744073709551615-18446744073709551615"  # the largest id: nothing can come after it
    for after in ("99999999999999999999-0", "0-18446744073709551616", top):
        async with http.get(f"{gateway}/ws/chat", params={"token": chat.token, "after": after}) as response:
            assert response.status == 400 and (await response.json())["code"] == "invalid_after"
    resumed = await connect(http, gateway, token=chat.token, after="18446744073709551615-18446744073709551614")
    assert resumed.session["history"] == []


async def test_a_twilio_body_longer_than_the_channel_allows_is_cut_and_marked(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_twilio(start_gateway)
    secret = uuid.uuid4().hex
    with capture_logs() as logged:
        status, _, body = await post(http, base, sms_form(secret + "x" * 1_000_000))
    assert status == 200, body
    store = ConversationStore(redis, Keys(namespace), 60)
    [cid] = await store.recent()
    first = (await store.transcript(cid))[0]
    assert len(first.text) == 1600 and first.text.startswith(secret)
    assert first.channel_metadata["truncated"] is True
    [warning] = [e for e in logged if e.get("event") == "twilio.body_truncated"]
    assert warning["log_level"] == "warning" and warning["chars"] == 1_000_032 and warning["kept"] == 1600
    assert secret not in repr(logged)  # no body in the logs


# -- 3. the gateway's own origin -------------------------------------------------------------------------

async def test_the_gateways_own_origin_is_allowed_on_any_port_and_a_foreign_one_is_told_why(
    start_gateway: Any, http: aiohttp.ClientSession
) -> None:
    base = await start_gateway(public_url="https://chat.example.test")  # default ALLOWED_ORIGINS (:8080)
    assert not base.endswith(":8080")
    for origin in (base, "https://chat.example.test"):
        chat = await connect(http, base, headers={"Origin": origin})
        assert chat.session["type"] == "session"
        async with http.get(f"{base}/ws/chat/check", headers={"Origin": origin}) as response:
            assert response.status == 200 and await response.json() == {"allowed": True}

    foreign = "http://127.0.0.1:1"
    async with http.get(f"{base}/ws/chat/check", headers={"Origin": foreign}) as response:
        assert response.status == 403 and (await response.json())["code"] == "origin_not_allowed"
        assert response.headers["Access-Control-Allow-Origin"] == "*"  # readable by the refused page
    async with http.get(f"{base}/ws/chat", headers={"Origin": foreign, "Connection": "Upgrade",
                                                     "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as r:
        assert r.status == 403


async def test_redis_clients_writer_race_counts_as_an_outage_and_our_own_attribute_errors_do_not() -> None:
    """redis-py raises AttributeError, not ConnectionError, when its writer is gone mid-send: the socket
    must answer that as the outage (4503), while an AttributeError of ours stays a bug."""
    try:
        await RedisConnection()._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])
    except AttributeError as exc:
        assert _raised_by_redis_client(exc)
    else:
        raise AssertionError("redis-py no longer raises AttributeError here: the workaround can go")
    try:
        None.writelines  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert not _raised_by_redis_client(exc)
