"""A gateway on loopback with Twilio's voice side played by the emulator (gateway/twilio_voice_emulator.py):
signed webhooks for whole calls, TwiML followed as Twilio would, the gateway's REST calls answered by its
stand-in, and agents' phones that tests answer and press keys on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from channels.voice.calls import CallState, CallStore, conversation_of_call
from gateway.embedded_redis import free_port
from gateway.twilio_voice_emulator import CallLeg, VoiceEmulator, Webhook
from handoff.agents import AgentStore
from handoff.queues import QueueStore
from sessions.batching import RedisBatcher
from sessions.keys import Keys
from sessions.models import Conversation
from sessions.store import ConversationStore

AUTH_TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://gateway.example.test"
ACCOUNT = "AC" + "1" * 32
BUSINESS = "+15550100002"
CALLER = "+14155550142"
FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # New York 10:00: the US teams are open
SUNDAY = datetime(2026, 11, 29, 15, 0, tzinfo=UTC)


@dataclass
class Agent:
    id: str
    token: str
    phone: str | None
    http: aiohttp.ClientSession
    base: str

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body,
                                     headers={"Authorization": f"Bearer {self.token}"}) as response:
            return response.status, await response.json()

    async def online(self, capacity: int = 2) -> None:
        status, _ = await self.call("POST", "/api/agents/me/presence", {"status": "online", "capacity": capacity})
        assert status == 200


@dataclass
class VoiceRig:
    base: str
    emulator: VoiceEmulator
    store: ConversationStore
    agents: AgentStore
    http: aiohttp.ClientSession
    redis: Redis
    namespace: str

    async def agent(self, name: str, phone: str | None, skills: list[str] | None = None,
                    online: bool = True, capacity: int = 2) -> Agent:
        added, token = await self.agents.add(name, skills or ["billing"], ["en"], [], phone)
        agent = Agent(added.id, token, phone, self.http, self.base)
        if online:
            await agent.online(capacity)
        return agent

    async def call(self, caller: str = CALLER) -> CallLeg:
        return await self.emulator.place_call(caller, BUSINESS)

    async def conversation(self, leg: CallLeg) -> Conversation:
        return await self.store.get(conversation_of_call(leg.sid))

    async def state(self, leg: CallLeg) -> str:
        return (await self.conversation(leg)).state.value

    async def until_state(self, leg: CallLeg, state: str, timeout: float = 10.0) -> Conversation:
        return await self.until_state_of(conversation_of_call(leg.sid), state, timeout)

    async def until_state_of(self, cid: str, state: str, timeout: float = 10.0) -> Conversation:
        deadline = time.monotonic() + timeout
        while True:
            conversation = await self.store.get(cid)
            if conversation.state.value == state:
                return conversation
            assert time.monotonic() < deadline, f"still {conversation.state.value}, not {state}"
            await asyncio.sleep(0.05)

    async def call_state(self, cid: str) -> CallState:
        return await CallStore(RedisBatcher(self.redis), Keys(self.namespace), 60).get(cid)

    async def queue_backlog(self, queue: str) -> list[tuple[str, datetime]]:
        return await QueueStore(self.redis, Keys(self.namespace)).waiting(queue, live=False)

    async def signed_post(self, path_and_query: str, form: dict[str, str]) -> tuple[int, str]:
        """A webhook as Twilio would send it: signed over the public URL."""
        signature = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC + path_and_query, form)
        async with self.http.post(self.base + path_and_query, data=form,
                                  headers={"X-Twilio-Signature": signature}) as response:
            return response.status, await response.text()

    async def replay(self, webhook: Webhook) -> tuple[int, str]:
        """Twilio delivering a webhook it sent before once more."""
        return await self.signed_post(webhook.url.removeprefix(PUBLIC), dict(webhook.form))


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def said_until(leg: CallLeg, fragment: str, timeout: float = 10.0) -> list[str]:
    """What the leg hears, up to and including the first thing containing ``fragment``."""
    heard: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never heard {fragment!r}; heard {heard}"
        text = await leg.next_said(timeout=remaining)
        heard.append(text)
        if fragment.lower() in text.lower():
            return heard


@pytest.fixture
async def voice(start_gateway: Any, redis: Redis, namespace: str) -> AsyncIterator[Callable[..., Any]]:
    emulators: list[VoiceEmulator] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(clock: datetime = FRIDAY_MORNING, **settings: Any) -> VoiceRig:
        api_port = free_port()
        values: dict[str, Any] = {
            "public_url": PUBLIC, "twilio_auth_token": AUTH_TOKEN, "twilio_account_sid": ACCOUNT,
            "twilio_api_base_url": f"http://127.0.0.1:{api_port}", "twilio_sms_from": "+15550100000",
            "twilio_voice_from": BUSINESS, "voice_agent_ring_seconds": 5, "offer_timeout_seconds": 5,
            **settings,
        }
        base = await start_gateway(clock=lambda: clock, **values)
        emulator = VoiceEmulator(base, PUBLIC, AUTH_TOKEN, ACCOUNT, api_port, time_scale=0.05)
        await emulator.start()
        emulators.append(emulator)
        http = aiohttp.ClientSession()
        sessions.append(http)
        keys = Keys(namespace)
        return VoiceRig(base, emulator, ConversationStore(redis, keys, 60), AgentStore(redis, keys), http, redis,
                        namespace)

    yield make
    for emulator in emulators:
        await emulator.stop()
    for http in sessions:
        await http.close()
