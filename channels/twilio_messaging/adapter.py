"""The SMS and WhatsApp channel adapters.

While Twilio's webhook request for a customer's message is open, replies to that conversation are
collected and returned in the request's TwiML (no REST call, no extra cost). Any other message (an agent's
reply, a reply too slow for the webhook's time budget) goes through Twilio's REST API; the outcome is
recorded on the conversation, so a failed delivery is visible to agents and reviews, never silent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, ClassVar

import structlog

from channels.base import Capabilities
from channels.twilio.replies import ReplyCollector
from channels.twilio_messaging.numbers import conversation_key, key_ttl_seconds
from channels.twilio_messaging.outbound import SendResult, TwilioSender
from channels.twilio_messaging.rules import MAX_BODY, inside_whatsapp_window, split_message
from sessions.batching import RedisBatcher
from sessions.jobs import Job, JobQueue
from sessions.keys import Keys
from sessions.models import (
    Conversation,
    ConversationEvent,
    Direction,
    Message,
    SenderKind,
    StatusKind,
    StatusUpdate,
    utcnow,
)
from sessions.store import ConversationNotFound, ConversationStore

log = structlog.get_logger(__name__)


SEND_KIND = "twilio_send"
MAX_ATTEMPTS = 6


def retry_delay(attempt: int) -> timedelta:
    return timedelta(seconds=min(600, 2 * 3**attempt))  # 2 s, 6 s, 18 s, ... up to 10 minutes


class OptOuts:
    """Numbers that texted STOP: nothing more is sent to them, agents' replies included, until START.

    Each call is queued on the batcher when made, so one made next to a conversation step shares its round
    trip (the webhook reads or sets a number's opt-out together with the text's append)."""

    def __init__(self, batcher: RedisBatcher, keys: Keys) -> None:
        self.batcher = batcher
        self.keys = keys

    def key(self, channel: str, number: str) -> str:
        return self.keys.identity(channel, number) + ":opted-out"

    def opted_out(self, channel: str, number: str) -> asyncio.Future[Any]:
        """Truthy once awaited when the number has opted out."""
        return self.batcher.command("EXISTS", self.key(channel, number))

    def opt_out(self, channel: str, number: str, at: datetime) -> asyncio.Future[Any]:
        return self.batcher.command("SET", self.key(channel, number), at.isoformat())

    def opt_in(self, channel: str, number: str) -> asyncio.Future[Any]:
        return self.batcher.command("DEL", self.key(channel, number))


class MessagingAdapter:
    """One Twilio messaging channel; subclasses add what their channel forbids."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        max_text_chars=MAX_BODY, attachments=True, push=True, live_updates=False
    )
    channel: ClassVar[str]

    def __init__(
        self,
        collector: ReplyCollector,
        store: ConversationStore,
        sender: TwilioSender | None,
        optouts: OptOuts,
    ) -> None:
        self.collector = collector
        self.store = store
        self.sender = sender
        self.optouts = optouts
        self.jobs: JobQueue | None = None  # set when the gateway has a job queue: failed sends are retried

    @property
    def name(self) -> str:
        return self.channel

    def address_of(self, conversation: Conversation) -> str | None:
        return next((i.address for i in conversation.customer.identities if i.channel == self.channel), None)

    async def refuse(self, conversation: Conversation, message: Message, reason: str) -> None:
        await self._record(
            conversation, message, SendResult(None, reason, reason_code=reason.split(":", maxsplit=1)[0])
        )

    async def refusal(self, conversation: Conversation, address: str) -> str | None:
        """Why nothing may be sent now, or None."""
        return None

    async def send_outside_window(self, address: str, message: Message) -> SendResult | None:
        """A channel-specific way to reach the customer when free-form text is not allowed; None if none."""
        return None

    async def deliver(self, conversation: Conversation, message: Message) -> None:
        # Inside the customer's webhook the answer rides in TwiML: the webhook checked the opt-out at intake.
        if self.collector.take(conversation.id, message):
            return
        await self._send_now(conversation, message, message.text, attempt=0)

    async def on_status(self, update: StatusUpdate) -> None:
        """A text costs the customer attention (and the team money): of all queue updates, only the first
        is sent, as a message. The rest of a handoff's steps come with their own notices already."""
        if update.kind is not StatusKind.WAIT_UPDATE or not update.data.get("first") or not update.text:
            return
        notice = Message(conversation_id=update.conversation_id, direction=Direction.OUTBOUND,
                         sender=SenderKind.SYSTEM, text=update.text, channel=self.channel)
        try:
            stored = await self.store.append(notice)
        except ConversationNotFound:
            return
        await self.deliver(stored.conversation, stored.message)

    async def agent_view(self, conversation_id: str) -> dict[str, Any]:
        return {}  # everything an agent needs is in the transcript and its delivery marks

    async def retry(self, job: Job, now: datetime) -> None:
        """A durable retry of what was not sent yet, after a restart too, with the same checks as the first
        attempt. The job ends only after the attempt (a crash in between repeats it rather than losing it)."""
        payload = job.payload
        try:
            conversation = await self.store.get(str(payload["conversation_id"]))
        except ConversationNotFound:
            conversation = None
        if conversation is not None:
            try:
                await self._retry_once(conversation, payload)
            except Exception:  # try again later rather than lose it, up to the attempts allowed
                log.exception("messaging.retry_crashed", message_id=payload.get("message_id"))
                if self.jobs is not None and job.attempt < MAX_ATTEMPTS:
                    await self.jobs.retry(job, now, retry_delay(job.attempt))
                    return
        if self.jobs is not None:
            await self.jobs.done(job)

    async def _retry_once(self, conversation: Conversation, payload: dict[str, Any]) -> None:
        message = Message(
            id=str(payload["message_id"]),
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            sender=SenderKind.AGENT,
            text=str(payload["text"]),
            channel=self.channel,
        )
        await self._send_now(conversation, message, message.text, attempt=int(payload["attempt"]))

    async def _send_now(
        self, conversation: Conversation, message: Message, text: str, *, attempt: int
    ) -> None:
        address = self.address_of(conversation)
        if address is None:
            await self.refuse(conversation, message, "no_number: the customer has no number on this channel")
            return
        if reason := await self.refusal(conversation, address):
            await self.refuse(conversation, message, reason)
            return
        if self.sender is None:
            await self.refuse(conversation, message, "not_configured: Twilio sending is not configured")
            return
        window = await self.send_outside_window(address, message.model_copy(update={"text": text}))
        if window is not None:
            await (self._record_sent if window.ok else self._record)(conversation, message, window)
            return
        parts = split_message(text)
        for index, part in enumerate(parts):
            result = await self.sender.send(self.channel, address, part)
            if result.ok:
                await self._record_sent(conversation, message, result)
                continue
            remaining = " ".join(parts[index:])
            if result.retryable and self.jobs is not None and attempt + 1 < MAX_ATTEMPTS:
                await self._schedule_retry(conversation, message, remaining, result, attempt)
            else:
                await self._record(conversation, message, result)
            return

    async def _schedule_retry(
        self, conversation: Conversation, message: Message, text: str, result: SendResult, attempt: int
    ) -> None:
        """What is not sent yet becomes a durable job, retried with backoff."""
        assert self.jobs is not None
        delay = retry_delay(attempt)
        await self.jobs.add(
            SEND_KIND,
            {
                "conversation_id": conversation.id,
                "message_id": message.id,
                "text": text,
                "channel": self.channel,
                "attempt": attempt + 1,
            },
            utcnow() + delay,
        )
        await self.store.record(
            conversation.id,
            ConversationEvent(
                type="delivery.retrying",
                conversation_id=conversation.id,
                data={
                    "message_id": message.id,
                    "detail": result.error,
                    "status": result.status,
                    "retry_in_seconds": delay.total_seconds(),
                },
            ),
        )
        log.info("messaging.retry_scheduled", message_id=message.id, attempt=attempt + 1)

    async def _record_sent(self, conversation: Conversation, message: Message, result: SendResult) -> None:
        """Bookkeeping after Twilio took a message. A failure here is logged, never raised: raising would
        have the send retried, and the customer would get the text twice."""
        try:
            await self._record(conversation, message, result)
        except Exception:
            log.exception("messaging.sent_not_recorded", message_id=message.id, sid=result.sid)

    async def _record(self, conversation: Conversation, message: Message, result: SendResult) -> None:
        if result.ok:
            log.info("messaging.sent", channel=self.channel, message_id=message.id, sid=result.sid)
            ttl = self.store.ttl_ms // 1000
            batch = self.store.batcher
            number_key = conversation_key(self.store.keys, self.channel, self.address_of(conversation) or "")
            await asyncio.gather(
                # Delivery reports name only the SID: remember which message it was.
                batch.command("SET", self.store.keys.twilio_message(str(result.sid)),
                              f"{conversation.id}|{message.id}", "EX", ttl),
                # The number's key lives on with the conversation (numbers.py); if it had expired under
                # this live conversation, it names it again.
                batch.command("SET", number_key, conversation.id, "NX", "EX", key_ttl_seconds(ttl)),
                batch.command("EXPIRE", number_key, key_ttl_seconds(ttl)),
            )
            event = ConversationEvent(
                type="delivery.sent",
                conversation_id=conversation.id,
                data={"message_id": message.id, "sid": result.sid},
            )
        else:
            log.warning(
                "messaging.undelivered",
                channel=self.channel,
                message_id=message.id,
                reason=result.reason_code,
                status=result.status,
            )
            event = ConversationEvent(
                type="delivery.failed",
                conversation_id=conversation.id,
                data={
                    "message_id": message.id,
                    "detail": result.error,
                    "reason": result.reason_code,
                    "status": result.status,
                },
            )
        await self.store.record(conversation.id, event)


class SmsAdapter(MessagingAdapter):
    channel: ClassVar[str] = "sms"

    async def refusal(self, conversation: Conversation, address: str) -> str | None:
        if await self.optouts.opted_out(self.channel, address):
            return (
                "opted_out: the customer texted STOP; nothing can be sent to this number until they "
                "text START"
            )
        return None


class WhatsAppAdapter(MessagingAdapter):
    channel: ClassVar[str] = "whatsapp"

    def __init__(
        self,
        collector: ReplyCollector,
        store: ConversationStore,
        sender: TwilioSender | None,
        optouts: OptOuts,
        template_sid: str | None,
    ) -> None:
        super().__init__(collector, store, sender, optouts)
        self.template_sid = template_sid

    async def refusal(self, conversation: Conversation, address: str) -> str | None:
        if inside_whatsapp_window(conversation.last_inbound_at, utcnow()) or self.template_sid:
            return None
        return (
            "outside_whatsapp_window: the customer last wrote more than 24 hours ago, and WhatsApp only "
            "allows an approved template then (set TWILIO_WHATSAPP_TEMPLATE_SID)"
        )

    async def send_outside_window(self, address: str, message: Message) -> SendResult | None:
        conversation = await self.store.get(message.conversation_id)
        if inside_whatsapp_window(conversation.last_inbound_at, utcnow()) or not self.template_sid:
            return None
        assert self.sender is not None
        return await self.sender.send_template(address, self.template_sid, {"1": message.text[:1024]})
