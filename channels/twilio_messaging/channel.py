"""SMS and WhatsApp as one transport: the two webhook routes, and the two adapters they feed."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from channels.base import ChannelContext
from channels.twilio.replies import ReplyCollector
from channels.twilio.webhooks import TwilioWebhooks, signed
from channels.twilio_messaging.adapter import (
    SEND_KIND,
    MessagingAdapter,
    OptOuts,
    SmsAdapter,
    WhatsAppAdapter,
)
from channels.twilio_messaging.outbound import OutboundConfig, TwilioSender
from channels.twilio_messaging.webhook import MessagingConfig, MessagingWebhook
from sessions.jobs import Job


@dataclass(frozen=True, slots=True)
class TwilioMessagingSettings:
    """What the messaging channel needs of the deployment's settings."""

    webhooks: TwilioWebhooks | None  # None: Twilio is not set up, the webhooks answer 403 saying so
    outbound: OutboundConfig | None  # None: nothing can be sent by REST (refusals are recorded)
    messaging: MessagingConfig
    whatsapp_template_sid: str | None = None


class TwilioMessagingChannel:
    name = "twilio_messaging"

    def __init__(self, settings: TwilioMessagingSettings) -> None:
        self.settings = settings
        self.webhook: MessagingWebhook | None = None
        self.sender: TwilioSender | None = None
        self.adapters: dict[str, MessagingAdapter] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/twilio/messaging", signed(self._guard, self._inbound))
        router.add_post("/twilio/messaging/status", signed(self._guard, self._status))

    def _guard(self) -> TwilioWebhooks | None:
        return self.settings.webhooks if self.webhook is not None else None

    async def _inbound(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        assert self.webhook is not None
        return await self.webhook.handle(request, form)

    async def _status(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        assert self.webhook is not None
        return await self.webhook.handle_status(request, form)

    async def start(self, context: ChannelContext) -> None:
        settings = self.settings
        collector = ReplyCollector()
        self.sender = (TwilioSender(settings.outbound, functools.partial(context.send_failed, self.name))
                       if settings.outbound is not None else None)
        optouts = OptOuts(context.store.batcher, context.keys)
        self.adapters = {
            "sms": SmsAdapter(collector, context.store, self.sender, optouts),
            "whatsapp": WhatsAppAdapter(collector, context.store, self.sender, optouts,
                                        settings.whatsapp_template_sid),
        }
        for adapter in self.adapters.values():
            adapter.jobs = context.jobs.jobs
            context.registry.register(adapter)
        context.jobs.register(SEND_KIND, self._retry_send)
        if settings.webhooks is not None:
            self.webhook = MessagingWebhook(
                settings.messaging, redis=context.redis, keys=context.keys, store=context.store,
                customers=context.customers, sink=context.sink, collector=collector, optouts=optouts,
            )

    async def _retry_send(self, job: Job, now: datetime) -> None:
        await self.adapters[str(job.payload["channel"])].retry(job, now)

    async def shutdown(self) -> None:
        if self.webhook is not None:
            await self.webhook.aclose()  # slow bots' turns still running: their replies go out first

    async def aclose(self) -> None:
        if self.sender is not None:
            await self.sender.aclose()
