"""``handoff-gateway review demo --conversations N``: customers and agents played through a running gateway's
real paths, so a newcomer's review (and dashboard) has something in it within minutes of ``make run``.

Customers write on web chat (the widget's websocket) and SMS (signed Twilio webhooks, some numbers writing
again: repeat contact), and call (through the voice emulator, when this command stands in for Twilio), from
a spread of scripts: questions the bot answers, words it cannot, requests for a
person, disputed charges, fraud. Demo agents (created in the gateway's Redis, online through the agent API)
take what the desk offers them, reply, and resolve with a context rating, most of them "yes". Nothing here
writes outcome records: the gateway records them as it would for real customers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from gateway.twilio_voice_emulator import VoiceEmulator
from handoff.agents import AgentStore
from sessions.keys import Keys

# (weight, what the customer writes in turn): answered, not understood, a person asked for, high risk.
SCRIPTS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (30, ("where is my order #12345",)),
    (12, ("how do I return an item?",)),
    (8, ("blorp zxcv qwerty", "frobnicate the thing please")),
    (18, ("I need to talk to a real person please", "no, just put me through to a human now")),
    (16, ("I want to dispute a charge on my card",)),
    (8, ("I want a refund, I was charged twice for my order",)),
    (4, ("someone used my card without permission, this is fraud",)),
    (4, ("Ich möchte mit einem Menschen sprechen", "bitte einen Mitarbeiter")),
)
AGENTS: tuple[tuple[str, list[str]], ...] = (
    ("Demo Ada", ["billing", "vip"]), ("Demo Ben", ["billing"]), ("Demo Cy", []), ("Demo Di", ["de"]))
REPLY = "Thanks for waiting, I have everything you told us and I'm sorting it now."
AT_ONCE = 24  # customers writing at the same time
ANSWER_SECONDS = 10.0


class Refused(Exception):
    """Web chat refused a new conversation from this address (the gateway's abuse limit)."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # where the gateway listens
    public_url: str  # what Twilio signs (PUBLIC_URL), for the SMS webhooks
    auth_token: str
    sms_from: str  # the business number customers text
    account_sid: str
    api_port: int | None  # where the gateway sends Twilio REST calls, when that is this machine
    voice_number: str  # the business number callers dial


class Demo:
    def __init__(self, target: Target, redis: Redis, keys: Keys, *, seed: int = 7) -> None:
        self.target = target
        self.redis = redis
        self.keys = keys
        self.random = random.Random(seed)  # noqa: S311 - a demo's spread, not a secret
        self.validator = RequestValidator(target.auth_token)
        self.counts: dict[str, int] = {"webchat": 0, "sms": 0, "voice": 0, "resolved": 0, "errors": 0}
        # The stand-in for Twilio, which also places calls to the gateway (None: no callers are played).
        self.phones: VoiceEmulator | None = None
        self._numbers: list[str] = []
        self.webchat_refused = False

    def _script(self) -> tuple[str, ...]:
        weights = [w for w, _ in SCRIPTS]
        return self.random.choices([s for _, s in SCRIPTS], weights)[0]

    async def run(self, conversations: int, http: aiohttp.ClientSession) -> dict[str, int]:
        tokens = await self._agents(http)
        stop = asyncio.Event()
        agents = [asyncio.create_task(self._agent(http, token, stop)) for token in tokens]
        gate = asyncio.Semaphore(AT_ONCE)
        try:
            await asyncio.gather(*(self._customer(http, gate, n) for n in range(conversations)))
            await asyncio.sleep(2 * ANSWER_SECONDS / 5)  # the agents take what is still offered
        finally:
            stop.set()
            await asyncio.gather(*agents, return_exceptions=True)
        return self.counts

    # -- customers ---------------------------------------------------------------------------------------
    async def _customer(self, http: aiohttp.ClientSession, gate: asyncio.Semaphore, n: int) -> None:
        async with gate:
            script = self._script()
            try:
                if self.phones is not None and n % 10 == 9:  # one in ten calls
                    await self._call(self.phones, script)
                    self.counts["voice"] += 1
                    return
                if not self.webchat_refused and self.random.random() >= 0.3:
                    try:
                        await self._chat(http, script)
                        self.counts["webchat"] += 1
                        return
                    except Refused:
                        self.webchat_refused = True  # the rest text instead
                await self._texts(http, script)
                self.counts["sms"] += 1
            except (aiohttp.ClientError, TimeoutError, ValueError):
                self.counts["errors"] += 1

    async def _chat(self, http: aiohttp.ClientSession, script: tuple[str, ...]) -> None:
        async with http.ws_connect(f"{self.target.url}/ws/chat", headers={"Origin": self.target.url}) as ws:
            await ws.receive_json(timeout=ANSWER_SECONDS)  # the session frame
            for text in script:
                await ws.send_json({"type": "message", "text": text, "client_id": uuid.uuid4().hex})
                if await self._answered(ws) == "handoff":
                    return

    @staticmethod
    async def _answered(ws: aiohttp.ClientWebSocketResponse) -> str:
        while True:
            frame = await ws.receive_json(timeout=ANSWER_SECONDS)
            if frame.get("type") == "handoff":
                return "handoff"
            if frame.get("type") == "message" and frame.get("sender") in ("bot", "system"):
                return "answer"
            if frame.get("type") == "error":
                raise Refused() if frame.get("code") == "rate_limited" else ValueError(frame.get("code"))

    async def _call(self, phones: VoiceEmulator, script: tuple[str, ...]) -> None:
        """A caller says the script to the bot; handed to a person, they hold a while, and some hang up
        before anyone takes the call (the demo agents take calls in the console only: abandonment)."""
        caller = f"+1650555{self.random.randrange(10_000):04d}"
        leg = await phones.place_call(caller, self.target.voice_number)
        try:
            await leg.next_said(timeout=ANSWER_SECONDS)  # the greeting
            for text in script:
                await leg.speak(text, timeout=ANSWER_SECONDS)
                await leg.next_said(timeout=ANSWER_SECONDS)
            await asyncio.sleep(self.random.uniform(0.5, 3.0))
        finally:
            if not leg.ended:
                await leg.hang_up()

    async def _texts(self, http: aiohttp.ClientSession, script: tuple[str, ...]) -> None:
        """A customer by SMS: one in five is a number that wrote before (a repeat contact)."""
        if self._numbers and self.random.random() < 0.2:
            number = self.random.choice(self._numbers)
        else:
            number = f"+1415555{self.random.randrange(10_000):04d}"
            self._numbers.append(number)
        for text in script:
            sid = "SM" + uuid.uuid4().hex
            form = {"MessageSid": sid, "SmsSid": sid, "AccountSid": self.target.account_sid, "From": number,
                    "To": self.target.sms_from, "Body": text, "NumMedia": "0", "NumSegments": "1",
                    "SmsStatus": "received", "ApiVersion": "2010-04-01"}
            signature = self.validator.compute_signature(f"{self.target.public_url}/twilio/messaging", form)
            async with http.post(f"{self.target.url}/twilio/messaging", data=form,
                                 headers={"X-Twilio-Signature": signature}) as response:
                if response.status != 200:
                    raise ValueError(f"the gateway answered {response.status}")
                await response.read()

    # -- agents ------------------------------------------------------------------------------------------
    async def _agents(self, http: aiohttp.ClientSession) -> list[str]:
        """Demo agents, new each run (their tokens are shown only once), online with room for several."""
        store = AgentStore(self.redis, self.keys)
        tokens = []
        for name, skills in AGENTS:
            found = await store.find(name)
            if found is not None:
                await store.remove(found)
            languages = ["de", "en"] if "de" in skills else ["en"]
            _, token = await store.add(name, [s for s in skills if s != "de"], languages, [])
            tokens.append(token)
            online = {"status": "online", "capacity": 4}
            await self._api(http, token, "POST", "/api/agents/me/presence", online)
        return tokens

    async def _api(self, http: aiohttp.ClientSession, token: str, method: str, path: str,
                   body: dict[str, Any] | None = None) -> Any:
        async with http.request(method, f"{self.target.url}{path}", json=body,
                                headers={"Authorization": f"Bearer {token}"}) as response:
            return await response.json() if response.status == 200 else None

    async def _agent(self, http: aiohttp.ClientSession, token: str, stop: asyncio.Event) -> None:
        """Take what is offered, reply, resolve (with how good the context was), until told to stop."""
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                offered = await self._api(http, token, "GET", "/api/conversations?state=offered") or {}
                for conversation in offered.get("conversations", []):
                    await self._api(http, token, "POST", f"/api/conversations/{conversation['id']}/claim")
                mine = await self._api(http, token, "GET", "/api/conversations?state=assigned") or {}
                for conversation in mine.get("conversations", []):
                    cid = conversation["id"]
                    path = f"/api/conversations/{cid}"
                    await self._api(http, token, "POST", f"{path}/messages", {"text": REPLY})
                    body = {"outcome": "resolved", "context_sufficient": self.random.random() < 0.8}
                    if await self._api(http, token, "POST", f"{path}/resolve", body):
                        self.counts["resolved"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)


async def _twilio_stand_in(target: Target) -> VoiceEmulator | None:
    """Twilio's API stood in for on this machine (agents' replies by SMS go there), unless a simulator
    already listens on the port or the gateway talks to the real Twilio."""
    if target.api_port is None:
        return None
    stand_in = VoiceEmulator(target.url, target.public_url, target.auth_token, target.account_sid,
                             target.api_port, time_scale=0.1)
    try:
        await stand_in.start()
    except OSError:
        return None
    return stand_in


async def play(target: Target, redis_url: str, namespace: str, conversations: int) -> int:
    redis = Redis.from_url(redis_url)
    try:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(f"{target.url}/readyz") as response:
                    ready = response.status == 200
            except aiohttp.ClientError:
                ready = False
            if not ready:
                print(f"handoff-gateway: no gateway ready at {target.url}: start one with `make run` "
                      "(or give --url)", file=sys.stderr)
                return 1
            stand_in = await _twilio_stand_in(target)
            demo = Demo(target, redis, Keys(namespace))
            demo.phones = stand_in
            try:
                counts = await demo.run(conversations, http)
            finally:
                if stand_in is not None:
                    await stand_in.stop()
    finally:
        await redis.aclose()
    print(f"played {counts['webchat']} web chat, {counts['sms']} SMS and {counts['voice']} phone "
          f"conversations; agents resolved "
          f"{counts['resolved']}; {counts['errors']} failed. Bot-only conversations are recorded once they "
          "have been quiet REVIEW_IDLE_MINUTES. See `handoff-gateway review` or /review.")
    if demo.webchat_refused:
        print("web chat refused more new conversations from this address "
              "(CHAT_NEW_CONVERSATIONS_PER_HOUR_PER_ADDRESS), so the rest texted instead")
    return 0 if counts["errors"] < max(1, conversations // 10) else 1
