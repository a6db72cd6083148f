"""Voice and IVR through Twilio as one transport: the call's webhooks, and the adapter handoffs reach.

``POST /twilio/voice`` (the number's Voice URL) and ``POST /twilio/voice/status`` (its status callback) are
fixed; every other path is handed to Twilio inside the TwiML or REST calls this channel makes. Every path is
behind the Twilio signature check; a malformed request is a 400 with a code, before anything changes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from channels.base import ChannelContext
from channels.twilio.callbacks import StatusCallbacks
from channels.twilio.rest import TwilioRest
from channels.twilio.webhooks import SignedHandler, TwilioWebhooks, signed
from channels.voice.adapter import VoiceAdapter
from channels.voice.agent_legs import AgentLegs
from channels.voice.callback_legs import CallbackLegs
from channels.voice.caller import CallerFlow
from channels.voice.calls import CallStore
from channels.voice.config import VoiceConfig
from channels.voice.desk import VoiceDesk
from channels.voice.params import BadRequest
from channels.voice.runtime import VoiceRuntime
from channels.voice.urls import BASE, VoiceUrls

_SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RestAccount:
    account_sid: str
    auth_token: str
    api_base_url: str


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    webhooks: TwilioWebhooks | None  # None: Twilio is not set up, every voice path answers 403 saying so
    account: RestAccount | None  # None: nobody can be dialled (agents take calls in the console only)
    config: VoiceConfig
    desk: Callable[[], VoiceDesk]  # the gateway's desk, as the voice channel needs it


class VoiceChannel:
    name = "twilio_voice"

    def __init__(self, settings: VoiceSettings) -> None:
        self.settings = settings
        self.runtime: VoiceRuntime | None = None
        self.caller: CallerFlow | None = None
        self.agents: AgentLegs | None = None
        self.callback_legs: CallbackLegs | None = None

    def _guard(self) -> TwilioWebhooks | None:
        return self.settings.webhooks if self.caller is not None else None

    def add_routes(self, router: web.UrlDispatcher) -> None:
        def route(path: str, pick: Callable[[], SignedHandler]) -> None:
            # The handler picked when called (the flows exist once the channel has started), and a bad
            # parameter answered 400: one coroutine between the signature check and the flow.
            async def handler(request: web.Request, form: dict[str, str]) -> web.StreamResponse:
                try:
                    return await pick()(request, form)
                except BadRequest as exc:
                    return exc.response()

            router.add_post(f"{BASE}{path}", signed(self._guard, handler))

        route("", lambda: self._caller().incoming)
        route("/status", lambda: self._caller().status)
        route("/turn", lambda: self._caller().turn)
        route("/poll", lambda: self._caller().poll)
        route("/wait", lambda: self._caller().wait_audio)
        route("/resume", lambda: self._caller().resume)
        route("/recorded", lambda: self._caller().recorded)
        route("/agent", lambda: self._agents().answered)
        route("/agent/key", lambda: self._agents().key)
        route("/agent/status", lambda: self._agents().status)
        route("/conference", lambda: self._agents().room_event)
        route("/hold", lambda: self._agents().hold)
        route("/notice", lambda: self._agents().notice)
        route("/callback/intake", lambda: self._caller().intake.key)
        route("/callback/agent", lambda: self._callbacks().agent_answered)
        route("/callback/agent/key", lambda: self._callbacks().agent_key)
        route("/callback/customer", lambda: self._callbacks().customer_answered)
        route("/callback/status", lambda: self._callbacks().status)

    def _caller(self) -> CallerFlow:
        assert self.caller is not None, "requests arrive only after start"
        return self.caller

    def _callbacks(self) -> CallbackLegs:
        assert self.callback_legs is not None, "requests arrive only after start"
        return self.callback_legs

    def _agents(self) -> AgentLegs:
        assert self.agents is not None, "requests arrive only after start"
        return self.agents

    async def start(self, context: ChannelContext) -> None:
        settings = self.settings
        account = settings.account
        rest = (TwilioRest(account.account_sid, account.auth_token, account.api_base_url,
                           on_failure=functools.partial(context.send_failed, self.name))
                if account is not None else None)
        webhooks = settings.webhooks
        runtime = VoiceRuntime(
            config=settings.config, urls=VoiceUrls(webhooks or TwilioWebhooks("http://localhost", "-")),
            store=context.store, customers=context.customers,
            calls=CallStore(context.store.batcher, context.keys, context.store.ttl_ms // 1000),
            callbacks=StatusCallbacks(context.redis, context.keys), sink=context.sink, desk=settings.desk(),
            rest=rest,
        )
        self.callback_legs = CallbackLegs(runtime)
        context.registry.register(VoiceAdapter(runtime, self.callback_legs))
        self.runtime = runtime
        if webhooks is not None:
            self.caller = CallerFlow(runtime)
            self.agents = AgentLegs(runtime)

    async def shutdown(self) -> None:
        """Slow bots' turns and REST calls still under way finish first, for a while."""
        if self.runtime is not None and self.runtime.background:
            await asyncio.wait(list(self.runtime.background), timeout=_SHUTDOWN_GRACE_SECONDS)

    async def aclose(self) -> None:
        if self.runtime is not None and self.runtime.rest is not None:
            await self.runtime.rest.aclose()
