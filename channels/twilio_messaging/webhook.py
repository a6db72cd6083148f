"""``POST /twilio/messaging``: inbound SMS and WhatsApp, checked, stored once, answered in TwiML.

Every request's ``X-Twilio-Signature`` is checked before it gets here (channels/twilio/webhooks.py), so a
forged or altered request is refused with 403 and changes nothing. A MessageSid is stored once however
often Twilio retries it. The bot's answer goes back in the TwiML response when it is ready within the time
budget, well inside Twilio's 15 seconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import structlog
from aiohttp import web
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from twilio.twiml.messaging_response import MessagingResponse

from channels.base import InboundSink
from channels.twilio.callbacks import StatusCallbacks
from channels.twilio.forms import FormError
from channels.twilio.replies import ReplyCollector
from channels.twilio_messaging.adapter import OptOuts
from channels.twilio_messaging.form import InboundText, parse_inbound
from channels.twilio_messaging.numbers import RecentConversations, conversation_key
from channels.twilio_messaging.rules import HELP, OPT_IN, OPT_OUT, keyword, split_message
from sessions.customers import CustomerStore
from sessions.keys import Keys
from sessions.models import ConversationEvent, Customer, Identity, InboundMessage, utcnow
from sessions.store import (
    AppendResult,
    ConversationFull,
    ConversationNotFound,
    ConversationStore,
    decode_text,
)

log = structlog.get_logger(__name__)

TWIML = "application/xml"
_OPEN_ATTEMPTS = 3
_SHUTDOWN_GRACE_SECONDS = 10.0
# Delete a key only while it holds the given value: one key, so atomic on a single server and on a cluster.
_COMPARE_AND_DELETE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


@dataclass(frozen=True, slots=True)
class MessagingConfig:
    help_text: str = "Reply here to chat with our support team. Reply STOP to opt out."
    link_channels: bool = False
    reply_budget_seconds: float = 5.0


def twiml(texts: list[str]) -> web.Response:
    return web.Response(text=_messaging_response(tuple(texts)), content_type=TWIML)


@lru_cache(maxsize=1024)
def _messaging_response(texts: tuple[str, ...]) -> str:
    """The TwiML document answering with ``texts``, built by twilio's builder. Kept for the next time: a
    bot's answers are mostly fixed texts (an FAQ's answers, the rules' messages), and building the XML is a
    noticeable share of a webhook."""
    response = MessagingResponse()
    for text in texts:
        for part in split_message(text):
            response.message(part)
    return str(response)


class MessagingWebhook:
    def __init__(
        self, config: MessagingConfig, *, redis: Redis, keys: Keys, store: ConversationStore,
        customers: CustomerStore, sink: InboundSink, collector: ReplyCollector, optouts: OptOuts,
    ) -> None:
        self.config = config
        self.callbacks = StatusCallbacks(redis, keys)
        self.redis = redis
        self.keys = keys
        self.store = store
        self.customers = customers
        self.sink = sink
        self.collector = collector
        self.optouts = optouts
        self._compare_and_delete: AsyncScript = redis.register_script(_COMPARE_AND_DELETE)
        self._recent = RecentConversations(store.ttl_ms // 1000)
        # Turns of slow bots that outlived their webhook (asyncio keeps only weak references to tasks).
        self._background: set[asyncio.Future[None]] = set()

    async def handle(self, request: web.Request, form: dict[str, str]) -> web.Response:
        """An inbound text, its signature already checked (channels/twilio/webhooks.py)."""
        try:
            inbound = parse_inbound(form)
        except FormError as exc:
            return web.json_response({"code": exc.code, "detail": exc.detail}, status=400)
        structlog.contextvars.bind_contextvars(message_sid=inbound.message_sid, channel=inbound.channel)
        message = InboundMessage(
            conversation_id=await self._conversation_of(inbound), channel=inbound.channel, text=inbound.body,
            attachments=inbound.attachments, external_id=f"twilio:{inbound.message_sid}",
            channel_metadata={k: v for k, v in (("profile_name", inbound.profile_name),
                                                 ("wa_id", inbound.wa_id),
                                                 ("truncated", inbound.truncated)) if v},
        )
        # The number's opt-out, read (or, for a STOP, set) in the same round trip as the append, both being
        # queued in this loop turn: an opted-out number gets no answer, not even in TwiML. A STOP is applied
        # with every delivery of it, Twilio's retries included, so whatever fails after, it is never lost.
        word = keyword(inbound.body) if inbound.channel == "sms" else None
        opted: asyncio.Future[Any] | None = None
        if inbound.channel == "sms":
            number = inbound.sender
            opted = (self.optouts.opt_out("sms", number, utcnow()) if word in OPT_OUT
                     else self.optouts.opted_out("sms", number))
            opted.add_done_callback(_retrieved)
        try:
            accepted = await self._accept(message, inbound)
        except ConversationFull as full:  # answered, so Twilio does not retry what can never be stored
            log.warning("twilio.conversation_full", limit=full.limit)
            return twiml([])
        if accepted.duplicate:
            if word in OPT_OUT and opted is not None:
                await opted  # went through, or this retry fails too and Twilio tries again
            log.info("twilio.retry_ignored")
            return twiml([])
        if opted is not None:
            answer = await opted  # for a STOP: it went through
            opted_out = word in OPT_OUT or bool(answer)
            if word is not None or opted_out:
                return await self._keyword(accepted, word, inbound, opted_out=opted_out)
        with self.collector.collecting(accepted.conversation.id) as replies:
            if self.sink.turns_wait_on_io:
                turn = asyncio.ensure_future(self.sink.advance(accepted))
                if await _finished_within(turn, self.config.reply_budget_seconds):
                    _log_failure(turn)
                else:  # slow bot: it finishes in the background; its reply takes the outbound path
                    self._background.add(turn)
                    turn.add_done_callback(self._background.discard)
                    turn.add_done_callback(_log_failure)
            else:  # an in-process bot answers at once: no deadline to enforce, no task to pay for
                try:
                    await self.sink.advance(accepted)
                except Exception as exc:  # the message is stored; Twilio must not retry it
                    log.error("twilio.turn_failed", error=repr(exc))
            texts = [m.text for m in replies if m.text]
        log.info("twilio.answered", replies=len(texts))
        return twiml(texts)

    async def aclose(self) -> None:
        """Let slow bots' turns still running finish (their replies go out by REST), for a while."""
        if self._background:
            await asyncio.wait(self._background, timeout=_SHUTDOWN_GRACE_SECONDS)

    async def handle_status(self, request: web.Request, form: dict[str, str]) -> web.Response:
        """``POST /twilio/messaging/status``: a delivery report, recorded on the message it is about.

        Each (MessageSid, MessageStatus) is recorded once; an undelivered or failed message is also recorded
        as ``delivery.failed``, which the agent's console shows at once.
        """
        sid, status = form.get("MessageSid", ""), form.get("MessageStatus", "")
        if not sid.isalnum() or not status.isalpha():
            return web.json_response({"code": "invalid_status",
                                      "detail": "MessageSid and MessageStatus are required."}, status=400)
        if not await self.callbacks.first(sid, status):
            return web.Response(status=204)  # a retried report
        mapping = await self.redis.get(self.keys.twilio_message(sid))
        if mapping is None:  # about a message we did not send (or not yet known): not marked as handled
            await self.callbacks.forget(sid, status)
            return web.Response(status=204)
        try:
            await self._record_status(form, sid, status, mapping)
        except Exception:
            await self.callbacks.forget(sid, status)  # let Twilio's retry record it
            raise
        return web.Response(status=204)

    async def _record_status(self, form: dict[str, str], sid: str, status: str, mapping: Any) -> None:
        cid, _, message_id = (mapping.decode() if isinstance(mapping, bytes) else str(mapping)).partition("|")
        data = {"message_id": message_id, "sid": sid, "status": status, "error_code": form.get("ErrorCode")}
        event = ConversationEvent(type="delivery.status", conversation_id=cid, data=data)
        await self.store.record(cid, event)
        if status in ("failed", "undelivered"):
            detail = f"Twilio reports the message {status} (error {form.get('ErrorCode') or 'unknown'})"
            await self.store.record(cid, ConversationEvent(
                type="delivery.failed", conversation_id=cid,
                data={"message_id": message_id, "detail": detail, "reason": status, "status": None}))
        log.info("twilio.delivery_status", status=status, message_id=message_id)

    async def _conversation_of(self, inbound: InboundText) -> str:
        """The conversation this number is writing to: remembered, or read from the number's key (renewed
        in the same round trip), or opened."""
        key = self._conversation_key(inbound)
        if (cid := self._recent.get(key)) is not None:
            return cid
        batch = self.store.batcher
        existing, _ = await asyncio.gather(  # one round trip, shared with other texts under load
            batch.command("GET", key), batch.command("EXPIRE", key, self._recent.key_ttl_seconds))
        cid = decode_text(existing) if existing is not None else await self._open(inbound)
        self._recent.renewed(key, cid)
        return cid

    async def _accept(self, message: InboundMessage, inbound: InboundText) -> AppendResult:
        """Store the message; if its conversation expired since the number last wrote, in a new one.

        A number's key only ever names a conversation opened in full, so a missing one has expired: the
        key is read again (another request may already have opened the next one), else a new one opens."""
        key = self._conversation_key(inbound)
        for _ in range(_OPEN_ATTEMPTS):
            try:
                return await self.sink.accept(message)
            except ConversationNotFound:
                self._recent.forget(key)
                named = await self.store.batcher.command("GET", key)
                if named is None or decode_text(named) == message.conversation_id:
                    await self._forget_if(key, message.conversation_id)
                    named = await self._open(inbound)
                cid = decode_text(named)
                self._recent.renewed(key, cid)
                message = message.model_copy(update={"conversation_id": cid})
        raise ConversationNotFound(message.conversation_id)

    async def _keyword(
        self, accepted: AppendResult, word: str | None, inbound: InboundText, *, opted_out: bool
    ) -> web.Response:
        """STOP, START and HELP are carrier rules, not conversation: kept in the transcript for the agent,
        acted on here, never answered by the bot. An opted-out number gets no answer until START."""
        conversation, number = accepted.conversation, inbound.sender
        if word in OPT_OUT:  # already stored with the message
            await self.store.record(conversation.id, ConversationEvent(
                type="sms.opted_out", conversation_id=conversation.id, data={"keyword": word}))
            log.info("sms.opted_out")
            return twiml([])  # Twilio's own opt-out handling confirms it to the customer
        if word in OPT_IN:
            await self.optouts.opt_in("sms", number)
            await self.store.record(conversation.id, ConversationEvent(
                type="sms.opted_in", conversation_id=conversation.id, data={"keyword": word}))
            log.info("sms.opted_in")
            return twiml([])
        if word in HELP and not opted_out:
            return twiml([self.config.help_text])
        return twiml([])

    def _conversation_key(self, inbound: InboundText) -> str:
        return conversation_key(self.keys, inbound.channel, inbound.sender)

    async def _forget_if(self, key: str, conversation_id: str) -> None:
        """Drop the number's key only while it still names the expired conversation (compare and delete)."""
        await self._compare_and_delete(keys=[key], args=[conversation_id])

    async def _open(self, inbound: InboundText) -> str:
        """A new conversation for this number on this channel (its customer found, linked or created),
        unless another request opened one first: then that one.

        The conversation is opened in full before the number's key names it (SET NX), so a request that
        finds a key always finds its conversation; the loser of a race drops the one it opened."""
        key = self._conversation_key(inbound)
        for _ in range(_OPEN_ATTEMPTS):
            opened = (await self.store.create(await self._customer(inbound), inbound.channel)).conversation.id
            if await self.store.batcher.command("SET", key, opened, "NX", "EX", self._recent.key_ttl_seconds):
                return opened
            winner, _ = await asyncio.gather(self.store.batcher.command("GET", key),
                                             self.store.discard(opened))
            if winner is not None:
                return decode_text(winner)
        raise ConversationNotFound(f"no conversation could be opened for {inbound.channel}")

    async def _customer(self, inbound: InboundText) -> Customer:
        identity = Identity(channel=inbound.channel, address=inbound.sender)
        if self.config.link_channels:  # the same number on SMS and WhatsApp is one customer
            other = "whatsapp" if inbound.channel == "sms" else "sms"
            linked = await self.customers.link(Identity(channel=other, address=inbound.sender), identity)
            if linked is not None:
                return linked
        profile = {"name": inbound.profile_name} if inbound.profile_name else {}
        return await self.customers.resolve(identity, profile, verified=False)


async def _finished_within(task: asyncio.Future[None], seconds: float) -> bool:
    """Whether ``task`` finished within ``seconds``; it is never cancelled. What ``asyncio.wait`` does for
    one task, without its per-call set, waiter and callback bookkeeping (a measurable share of a webhook)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a read whose caller may never await it (its append failed) as seen, so asyncio stays quiet."""
    if not future.cancelled():
        future.exception()


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("twilio.turn_failed", error=repr(task.exception()))

