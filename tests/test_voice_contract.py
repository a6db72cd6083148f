"""The voice channel's real REST requests to Twilio (calls create and update, conference participants
update), checked by Stoplight Prism against Twilio's OpenAPI description: a request Twilio would refuse is
a 422 there, which the gateway records on the conversation as ``voice.rest_failed``.

Twilio's side of the call is played here by signed webhooks in the order Twilio sends them; Prism answers
the REST calls (it places no calls, so the agents' legs are played by webhooks too).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from channels.voice.calls import CallState, CallStore, conversation_of_call
from gateway.embedded_redis import free_port
from handoff.agents import AgentStore
from sessions.batching import RedisBatcher
from sessions.keys import Keys
from sessions.store import ConversationStore
from tests import prism
from tests.test_twilio_messaging import sms_form
from tests.voice_rig import ACCOUNT, AUTH_TOKEN, BUSINESS, CALLER, FRIDAY_MORNING, PUBLIC, Agent


@pytest.fixture
async def prism_url() -> AsyncIterator[str]:
    async for url in prism.serve(free_port()):
        yield url


async def gateway_on_prism(start_gateway: Any, prism_url: str) -> str:
    """A gateway whose Twilio REST calls go to Prism, during business hours."""
    return str(await start_gateway(clock=lambda: FRIDAY_MORNING, public_url=PUBLIC, twilio_auth_token=AUTH_TOKEN,
                                   twilio_account_sid=ACCOUNT, twilio_api_base_url=prism_url,
                                   twilio_voice_from=BUSINESS, twilio_sms_from="+15550100000"))


def call_form(sid: str, **extra: str) -> dict[str, str]:
    return {"CallSid": sid, "AccountSid": ACCOUNT, "From": CALLER, "To": BUSINESS, "CallStatus": "in-progress",
            "Direction": "inbound", "ApiVersion": "2010-04-01", "Caller": CALLER, "Called": BUSINESS, **extra}


def new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class Twilio:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def post(self, path: str, form: dict[str, str]) -> str:
        signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path, form)
        async with self.http.post(self.base + path, data=form, headers={"X-Twilio-Signature": signature}) as r:
            assert r.status in (200, 204), await r.text()
            return await r.text()


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    for _ in range(int(timeout / 0.05)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_dialling_agents_holding_transferring_and_redirecting_are_requests_twilio_accepts(
    start_gateway: Any, redis: Redis, namespace: str, prism_url: str,
) -> None:
    base = await gateway_on_prism(start_gateway, prism_url)
    keys = Keys(namespace)
    store = ConversationStore(redis, keys, 60)
    calls = CallStore(RedisBatcher(redis), keys, 60)
    async with aiohttp.ClientSession() as http:
        twilio = Twilio(http, base)
        agents = AgentStore(redis, keys)
        added, token = await agents.add("Alex", ["billing"], ["en"], [], "+15550001111")
        alex = Agent(added.id, token, "+15550001111", http, base)
        await alex.online()
        caller = new_sid("CA")
        cid = conversation_of_call(caller)
        await twilio.post("/twilio/voice", call_form(caller, CallStatus="ringing"))
        await twilio.post(f"/twilio/voice/turn?c={cid}&n=1",
                          call_form(caller, SpeechResult="I want to dispute a charge on my card",
                                    Confidence="0.9"))

        async def dialled(kind: str) -> CallState | None:
            state = await calls.get(cid)
            return state if state.get(f"{kind}_ringing") else None

        offered = await until(lambda: dialled("offer"))
        assert str(offered.get("offer_ringing")).startswith("CA")  # Prism took the calls create
        alex_leg = new_sid("CA")
        agent_form = {**call_form(alex_leg), "Direction": "outbound-api", "From": BUSINESS, "To": alex.phone or ""}
        brief = await twilio.post(f"/twilio/voice/agent?c={cid}&a={alex.id}&k=offer",
                                  {**agent_form, "AnsweredBy": "human"})
        assert "Press 1" in brief
        joined = await twilio.post(f"/twilio/voice/agent/key?c={cid}&a={alex.id}&k=offer",
                                   {**agent_form, "Digits": "1"})
        assert "<Conference" in joined
        await twilio.post(f"/twilio/voice/conference?c={cid}",
                          {"ConferenceSid": new_sid("CF"), "FriendlyName": f"hg-{cid}", "AccountSid": ACCOUNT,
                           "StatusCallbackEvent": "participant-join", "CallSid": caller})
        added, token = await agents.add("Sam", ["billing"], ["en"], [], "+15550002222")
        await Agent(added.id, token, "+15550002222", http, base).online()
        status, _ = await alex.call("POST", f"/api/conversations/{cid}/transfer", {"agent": "Sam", "note": "VIP"})
        assert status == 202
        await until(lambda: dialled("transfer"))
        sam_leg = new_sid("CA")
        sam_form = {**agent_form, "CallSid": sam_leg, "To": "+15550002222"}
        await twilio.post(f"/twilio/voice/agent?c={cid}&a={added.id}&k=transfer", sam_form)
        await twilio.post(f"/twilio/voice/agent/key?c={cid}&a={added.id}&k=transfer", {**sam_form, "Digits": "2"})
        assert any(e.type == "handoff.transfer_failed" for e in await store.events(cid))
        # Alex hangs up: the caller's call is redirected to wait for the next agent. Had Twilio refused the
        # redirect, the gateway would take the caller for gone and resolve the conversation.
        await twilio.post(f"/twilio/voice/agent/status?c={cid}&a={alex.id}&k=offer",
                          {**agent_form, "CallStatus": "completed", "CallDuration": "42"})
        assert (await store.get(cid)).state.value == "assigned"
        events = await store.events(cid)
        failed = [e.data for e in events if e.type == "voice.rest_failed"]
        assert failed == []  # Prism answers 422 to anything Twilio's contract refuses


async def test_a_caller_hanging_up_stops_the_agents_phone_with_a_request_twilio_accepts(
    start_gateway: Any, redis: Redis, namespace: str, prism_url: str,
) -> None:
    base = await gateway_on_prism(start_gateway, prism_url)
    keys = Keys(namespace)
    store = ConversationStore(redis, keys, 60)
    calls = CallStore(RedisBatcher(redis), keys, 60)
    async with aiohttp.ClientSession() as http:
        twilio = Twilio(http, base)
        added, token = await AgentStore(redis, keys).add("Alex", ["billing"], ["en"], [], "+15550001111")
        await Agent(added.id, token, "+15550001111", http, base).online()
        caller = new_sid("CA")
        cid = conversation_of_call(caller)
        await twilio.post("/twilio/voice", call_form(caller, CallStatus="ringing"))
        await twilio.post(f"/twilio/voice/turn?c={cid}&n=1",
                          call_form(caller, SpeechResult="I want to dispute a charge on my card"))

        async def ringing() -> bool:
            return bool((await calls.get(cid)).get("offer_ringing"))

        await until(ringing)
        await twilio.post("/twilio/voice/status", call_form(caller, CallStatus="completed", CallDuration="30"))
        assert (await store.get(cid)).state.value == "abandoned"
        assert [e for e in await store.events(cid) if e.type == "voice.rest_failed"] == []


async def test_a_callbacks_agent_and_customer_legs_are_calls_twilio_accepts(
    start_gateway: Any, redis: Redis, namespace: str, prism_url: str,
) -> None:
    """The agent's leg, then the customer's, each a calls create with MachineDetection (docs/callbacks.md)."""
    base = await gateway_on_prism(start_gateway, prism_url)
    keys = Keys(namespace)
    store = ConversationStore(redis, keys, 60)
    calls = CallStore(RedisBatcher(redis), keys, 60)
    customer = "+14155550123"
    async with aiohttp.ClientSession() as http:
        twilio = Twilio(http, base)
        await asyncio.sleep(2.5)  # the desk has looked: nobody is online, so a callback is offered
        reply = ""
        for body in ("I need to talk to a real person please", "no, just put me through to a human now"):
            reply = await twilio.post("/twilio/messaging", sms_form(body, sender=customer))
        assert "When suits you?" in reply
        await twilio.post("/twilio/messaging", sms_form("1", sender=customer))
        [cid] = await store.recent()
        added, token = await AgentStore(redis, keys).add("Alex", [], ["en"], [], "+15550001111")
        alex = Agent(added.id, token, "+15550001111", http, base)
        await alex.online()

        async def due() -> bool:
            return (await store.get(cid)).state.value in ("queued", "offered")

        await until(due)
        status, body = await alex.call("POST", f"/api/conversations/{cid}/claim")
        assert status == 200, body

        async def leg(field: str) -> str | None:
            return (await calls.get(cid)).get(field)

        agent_sid = await until(lambda: leg("cb_agent:1"))
        assert str(agent_sid).startswith("CA")  # Prism took the agent's calls create
        agent_form = {**call_form(new_sid("CA")), "Direction": "outbound-api", "From": BUSINESS,
                      "To": "+15550001111", "AnsweredBy": "human"}
        brief = await twilio.post(f"/twilio/voice/callback/agent?c={cid}&n=1", agent_form)
        assert "This is a callback the customer asked for" in brief
        await twilio.post(f"/twilio/voice/callback/agent/key?c={cid}&n=1", {**agent_form, "Digits": "1"})
        assert str(await until(lambda: leg("cb_customer_sid:1"))).startswith("CA")  # and the customer's
        assert [e for e in await store.events(cid) if e.type == "voice.rest_failed"] == []
