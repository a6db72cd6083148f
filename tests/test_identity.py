"""Host-site identity on the widget: signed claims are verified, anything else is kept but never trusted."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from redis.asyncio import Redis

from channels.webchat.identity import sign_identity
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests.chat import connect

SECRET = "s3cret-shared-with-the-shop"
JANE = json.dumps({"id": "cust-9", "name": "Jane", "email": "jane@example.test", "tier": "vip", "language": "de"})


async def customer_of(redis: Redis, namespace: str, conversation_id: str) -> Any:
    return (await ConversationStore(redis, Keys(namespace), 60).get(conversation_id)).customer


async def test_signed_identity_is_verified(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(identity_secret=SECRET)
    chat = await connect(http, base, params={"identity": JANE, "identity_sig": sign_identity(JANE, SECRET)})
    await chat.open("hello")  # the customer is created with the conversation, by the first message
    customer = await customer_of(redis, namespace, chat.conversation_id)
    assert customer.verified and customer.trusted("tier") == "vip" and customer.trusted("language") == "de"
    assert customer.external_id == "cust-9"

    # The same signed-in customer on a later visit is the same customer record.
    later = await connect(http, base, params={"identity": JANE, "identity_sig": sign_identity(JANE, SECRET)})
    await later.open("hello again")
    assert (await customer_of(redis, namespace, later.conversation_id)).id == customer.id


async def test_badly_signed_or_unsigned_identity_is_kept_but_unverified(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(identity_secret=SECRET)
    tampered = JANE.replace("vip", "platinum")
    for params in (
        {"identity": tampered, "identity_sig": sign_identity(JANE, SECRET)},
        {"identity": JANE},
        {"identity": JANE, "identity_sig": sign_identity(JANE, "another secret")},
    ):
        chat = await connect(http, base, params=params)
        await chat.open("hello")
        customer = await customer_of(redis, namespace, chat.conversation_id)
        assert not customer.verified and customer.trusted("tier") is None
        assert customer.tier in {"vip", "platinum"} and customer.name == "Jane"
        assert customer.identities == []  # an unverified id never links to someone's customer record


async def test_without_a_configured_secret_nothing_is_verified(
    gateway: str, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    chat = await connect(http, gateway, params={"identity": JANE, "identity_sig": sign_identity(JANE, "")})
    await chat.open("hello")
    assert not (await customer_of(redis, namespace, chat.conversation_id)).verified


async def test_malformed_identity_still_opens_a_chat(gateway: str, http: aiohttp.ClientSession) -> None:
    chat = await connect(http, gateway, params={"identity": "{not json", "identity_sig": "zz"})
    assert (await chat.say("hello"))["sender"] == "bot"
