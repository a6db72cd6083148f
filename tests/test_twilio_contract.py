"""The gateway's real outbound Twilio requests, checked by Prism against Twilio's OpenAPI description."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.embedded_redis import free_port
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests import prism
from tests.test_twilio_messaging import TwilioStandIn, with_agent


@pytest.fixture
async def prism_api() -> AsyncIterator[TwilioStandIn]:
    async for url in prism.serve(free_port()):
        stand_in = TwilioStandIn()
        stand_in.url = url
        yield stand_in


async def test_agent_replies_and_whatsapp_templates_are_requests_twilio_accepts(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, prism_api: TwilioStandIn
) -> None:
    store = ConversationStore(redis, Keys(namespace), 60)
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, prism_api,
                                     "I want to dispute a charge on my card")
    status, sent = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Hi, Alex here."})
    assert status == 201
    outcome = [e for e in await store.events(cid) if e.data.get("message_id") == sent["id"]]
    assert [e.type for e in outcome] == ["delivery.sent"], outcome  # Prism answers 422 to an invalid request
    assert outcome[0].data["sid"].startswith("SM")


async def test_a_whatsapp_template_is_a_request_twilio_accepts(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, prism_api: TwilioStandIn
) -> None:
    store = ConversationStore(redis, Keys(namespace), 60)
    _, cid, agent = await with_agent(start_gateway, http, redis, namespace, prism_api,
                                     "I want to dispute a charge on my card", sender="whatsapp:+34612345678",
                                     twilio_whatsapp_template_sid="HX" + "b" * 32)
    await redis.hset(Keys(namespace).conversation(cid), "last_inbound_at",
                     (datetime.now(UTC) - timedelta(hours=25)).isoformat())
    _, sent = await agent.call("POST", f"/api/conversations/{cid}/messages", {"text": "Your refund is approved."})
    outcome = [e.type for e in await store.events(cid) if e.data.get("message_id") == sent["id"]]
    assert outcome == ["delivery.sent"]


def test_the_spec_patch_declares_every_array_form_field_as_repeated_keys() -> None:
    spec = prism.patched_spec(json.loads(prism.SPEC.read_text()))
    calls = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Calls.json"]["post"]["requestBody"]["content"]
    assert calls[prism.FORM]["encoding"]["StatusCallbackEvent"] == {"style": "form", "explode": True}
    for item in spec["paths"].values():
        for operation in item.values():
            media = operation.get("requestBody", {}).get("content", {}).get(prism.FORM, {}) \
                if isinstance(operation, dict) else {}
            arrays = {k for k, v in media.get("schema", {}).get("properties", {}).items() if v.get("type") == "array"}
            assert arrays == set(media.get("encoding", {})), arrays
