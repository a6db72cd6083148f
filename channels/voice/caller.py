"""The caller's side of a call: answered by the bot, then waiting for a person in the conversation's room.

Each handler is one Twilio webhook (its signature already checked) and answers TwiML. A turn's speech or
keys are stored once per (CallSid, turn number), so a retried webhook stores nothing twice and is answered
from the transcript; a bot slower than the budget gets a holding phrase and the call polls for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import structlog
from aiohttp import web

from channels.twilio.forms import FormError, e164
from channels.voice import twiml
from channels.voice.callback_intake import CallbackIntake
from channels.voice.calls import conversation_of_call, room_of
from channels.voice.params import BadRequest, answer, call_sid, conversation_param, int_param
from channels.voice.runtime import CHANNEL, VoiceRuntime
from sessions.models import (
    Attachment,
    Conversation,
    ConversationState,
    Customer,
    Direction,
    Identity,
    InboundMessage,
    Message,
    SenderKind,
)
from sessions.store import ConversationNotFound

log = structlog.get_logger(__name__)

_MESSAGE_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
MAX_TURNS = 10**9
MAX_TEXT_CHARS = 4000
# Keys on the phone menu with a meaning of their own: 0 asks for a person, in words the rules know.
KEY_WORDS = {"0": "I'd like to speak to an agent (pressed 0)"}
# The first key a caller reminded of their booked callback presses to cancel it.
CANCEL_KEY = "2"
# The handoff's mode in which a caller waits on the line for a person (handoff/routing.py's LIVE).
LIVE_MODE = "live"
# The caller's identity on the phone is their number: the same customer as that number's SMS.
LINKED_CHANNEL = "sms"


class CallerFlow:
    def __init__(self, rt: VoiceRuntime) -> None:
        self.rt = rt
        self.intake = CallbackIntake(rt, self.waiting_or_after)

    # -- POST /twilio/voice --------------------------------------------------------------------------------
    async def incoming(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        """A new call: the caller's conversation (derived from the CallSid, so a retry finds the same one),
        the greeting stored once, and the first prompt."""
        sid = call_sid(form)
        cid = conversation_of_call(sid)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid)
        rt = self.rt
        customer = await self._customer(form.get("From", ""))
        created = await rt.store.create(customer, CHANNEL, conversation_id=cid)
        greeting = Message(conversation_id=cid, direction=Direction.OUTBOUND, sender=SenderKind.BOT,
                           text=rt.config.texts.greeting, channel=CHANNEL)
        booked, stored = await asyncio.gather(rt.desk.callback_booked(customer.id, CHANNEL),
                                              rt.store.append(greeting, external_id=f"twilio:{sid}:greeting"))
        # A callback they booked earlier (on any channel): said after the greeting, 2 cancels it.
        await rt.calls.set(cid, sid=sid, cb_booked=booked.conversation_id if booked else None)
        log.info("voice.call_started", duplicate=stored.duplicate, callback_booked=booked is not None)
        speech = rt.speech(created.conversation if not stored.duplicate else stored.conversation)
        said = [rt.config.texts.greeting, booked.reminder] if booked else [rt.config.texts.greeting]
        return answer(self._prompt(speech, cid, 1, said))

    async def _customer(self, raw: str) -> Customer:
        """The caller by their number (the same customer as on SMS); a withheld number is a new customer."""
        customers = self.rt.customers
        try:
            number = e164(raw)
        except FormError:
            return await customers.resolve(None, {}, verified=False)
        voice = Identity(channel=CHANNEL, address=number)
        known = await customers.link(Identity(channel=LINKED_CHANNEL, address=number), voice)
        if known is not None:
            return known
        customer = await customers.resolve(voice, {}, verified=False)
        # Texts from this number later find the same customer.
        return await customers.link(voice, Identity(channel=LINKED_CHANNEL, address=number)) or customer

    def _prompt(self, speech: twiml.Speech, cid: str, n: int, texts: list[str], silences: int = 0) -> str:
        url = self.rt.urls.turn(cid, n, silences)
        timeout = self.rt.config.gather_timeout_seconds
        return twiml.prompt(speech, texts, url, timeout_seconds=timeout, after=url)

    # -- POST /twilio/voice/turn?c=&n= -----------------------------------------------------------------------
    async def turn(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        """What the caller said (or pressed) for prompt ``n``: stored once, answered by the bot."""
        cid, n, sid = conversation_param(request), int_param(request, "n", MAX_TURNS), call_sid(form)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid)
        rt = self.rt
        speech_text = " ".join(form.get("SpeechResult", "").split())
        digits = "".join(c for c in form.get("Digits", "") if c.isdigit() or c in "*#")
        if not speech_text and not digits:
            return answer(self._silence(cid, n, int_param(request, "s", 1000) if "s" in request.query else 0))
        if n == 1 and digits == CANCEL_KEY and not speech_text:
            cancelled = await self._cancel_booked(cid)
            if cancelled is not None:
                return answer(self._prompt(rt.speech(None), cid, n, [cancelled]))
        metadata: dict[str, object] = {"call_sid": sid}
        if speech_text:
            metadata["asr_confidence"] = _confidence(form.get("Confidence"))
        if digits:
            metadata["digits"] = digits
        text = speech_text or KEY_WORDS.get(digits, f"(pressed {digits})")
        inbound = InboundMessage(conversation_id=cid, channel=CHANNEL, text=text[:MAX_TEXT_CHARS],
                                 external_id=f"twilio:{sid}:turn:{n}", channel_metadata=metadata)
        try:
            accepted = await rt.sink.accept(inbound)
        except ConversationNotFound:
            return answer(twiml.goodbye(rt.speech(None), [rt.config.texts.goodbye]))
        if accepted.duplicate:  # Twilio retried this turn: answer from what the first delivery stored
            log.info("voice.retry_ignored")
            return answer(await self._after_turn(cid, n, accepted.message.id, k=0))
        with rt.collector.collecting(cid) as replies:
            if rt.sink.turns_wait_on_io:
                turn = asyncio.ensure_future(rt.sink.advance(accepted))
                done, _ = await asyncio.wait({turn}, timeout=rt.config.reply_budget_seconds)
                if not done:  # a slow bot: the caller hears a holding phrase and the call polls
                    rt.background.add(turn)
                    turn.add_done_callback(rt.background.discard)
                    speech = rt.speech(accepted.conversation)
                    poll = rt.urls.poll(cid, n, accepted.message.id, 1)
                    holding = rt.config.texts.holding
                    return answer(twiml.holding(speech, holding, poll, rt.config.poll_seconds))
                if turn.exception() is not None:
                    log.error("voice.turn_failed", error=repr(turn.exception()))
            else:
                try:
                    await rt.sink.advance(accepted)
                except Exception as exc:  # stored; Twilio must not retry it, the caller must hear something
                    log.error("voice.turn_failed", error=repr(exc))
            said = list(replies)
        log.info("voice.answered", replies=len(said))
        return answer(await self._render(accepted.conversation, n, said))

    async def _cancel_booked(self, cid: str) -> str | None:
        """2 as the first answer of a caller reminded of their booked callback: it is cancelled (a retried
        webhook finds it cancelled already and hears the same), and the bot asks how it can help."""
        rt = self.rt
        booked = (await rt.calls.get(cid)).get("cb_booked")
        if not booked:
            return None  # nothing was booked: 2 is an answer for the bot
        said = await rt.desk.callback_cancel(booked, CHANNEL) or rt.config.texts.callback_cancelled
        log.info("voice.callback_cancelled_by_key")
        return f"{said} {rt.config.texts.anything_else}"

    def _silence(self, cid: str, n: int, before: int) -> str:
        """No input: a reprompt, then after the limit a goodbye (never a loop). The count of silences in a
        row travels in the prompt's URL, so counting costs nothing and a retried webhook counts once."""
        rt = self.rt
        silences = before + 1
        speech = rt.speech(None)
        if silences > rt.config.max_silences:
            log.info("voice.silent_goodbye", silences=silences)
            return twiml.goodbye(speech, [rt.config.texts.goodbye_silent])
        return self._prompt(speech, cid, n, [rt.config.texts.reprompt], silences=silences)

    # -- POST /twilio/voice/poll?c=&n=&m=&k= -----------------------------------------------------------------
    async def poll(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, n = conversation_param(request), int_param(request, "n", MAX_TURNS)
        k = int_param(request, "k", 1000)
        message_id = request.query.get("m", "")
        if not _MESSAGE_ID.match(message_id):
            raise BadRequest("invalid_m", "The URL's m= is not a message id.")
        structlog.contextvars.bind_contextvars(conversation_id=cid)
        return answer(await self._after_turn(cid, n, message_id, k))

    async def _after_turn(self, cid: str, n: int, message_id: str, k: int) -> str:
        """The answer to the customer's message ``message_id``, read from the transcript: whatever the bot
        (or the handoff) said after it. Not there yet: poll again for a while, then ask again."""
        rt = self.rt
        try:
            conversation = await rt.store.get(cid)
        except ConversationNotFound:
            return twiml.goodbye(rt.speech(None), [rt.config.texts.goodbye])
        transcript = await rt.store.transcript(cid, message_id)
        said = [m for m in transcript if m.direction is Direction.OUTBOUND and m.sender in
                (SenderKind.BOT, SenderKind.SYSTEM)]
        if said or conversation.state is not ConversationState.BOT:
            return await self._render(conversation, n, said)
        speech = rt.speech(conversation)
        if k >= rt.config.max_polls:
            return self._prompt(speech, cid, n + 1, [rt.config.texts.bot_unavailable])
        return twiml.holding(speech, "", rt.urls.poll(cid, n, message_id, k + 1), rt.config.poll_seconds)

    async def _render(self, conversation: Conversation, n: int, said: list[Message]) -> str:
        """What the caller hears after a turn: the bot's answer and the next prompt, or the handoff."""
        rt = self.rt
        texts = [m.text for m in said if m.text]
        handoff = next((m.channel_metadata["handoff"] for m in reversed(said)
                        if isinstance(m.channel_metadata.get("handoff"), dict)), None)
        speech = rt.speech(conversation)
        cid = conversation.id
        offered = next((m for m in said if "callback_offer" in m.channel_metadata), None)
        if offered is not None:  # the handoff offered a callback (asked for, closed, nobody online): keys
            before = [m.text for m in said if m is not offered and m.text]
            hold = (handoff is not None and handoff.get("status") == ConversationState.QUEUED.value
                    and handoff.get("mode") == LIVE_MODE and not handoff.get("unstaffed"))
            document = await self.intake.offer(conversation, before, "asked", hold=hold)
            if document is not None:
                return document
        if handoff is None:
            if conversation.state in (ConversationState.BOT, ConversationState.RESOLVED):
                return self._prompt(speech, cid, n + 1, texts)
            return await self.waiting_or_after(conversation, texts)  # handed off on an earlier turn
        if handoff.get("status") == ConversationState.QUEUED.value:
            if handoff.get("unstaffed"):
                await rt.desk.follow_up(cid)
                return twiml.goodbye(speech, [*texts[:-1], rt.config.texts.unstaffed])
            # The conversation as the handoff left it (queue, callback): what the caller may press for.
            with contextlib.suppress(ConversationNotFound):
                conversation = await rt.store.get(cid)
            return await self.wait(conversation, texts)
        if handoff.get("mode") == "voicemail":
            return twiml.voicemail(speech, texts, rt.urls.recorded(cid), rt.config.voicemail_seconds)
        return twiml.goodbye(speech, [*texts, rt.config.texts.goodbye])

    async def wait(self, conversation: Conversation, texts: list[str]) -> str:
        """Into the room to wait for a person (hold audio and announcements from ``/wait``), told that star
        asks for a callback instead where the queue takes them."""
        rt, cid = self.rt, conversation.id
        speech = rt.speech(conversation)
        # What was said on the way in is the latest word; an older place in the queue is not repeated.
        await rt.calls.set(cid, announced_at=int(time.time()), announced_text=texts[-1] if texts else None,
                           wait_text=None, locale=speech.language)
        star = rt.desk.takes_callbacks(conversation)
        said = [*texts, rt.config.texts.star_for_callback] if star else texts
        return twiml.wait_for_agent(speech, said, room_of(cid), wait_url=rt.urls.wait(cid),
                                    events_url=rt.urls.room_events(cid), after=rt.urls.after_room(cid),
                                    star_leaves=star)

    async def waiting_or_after(self, conversation: Conversation, texts: list[str]) -> str:
        """Where a call goes once the conversation has left the bot, by its state now."""
        rt = self.rt
        speech = rt.speech(conversation)
        state = conversation.state
        if state in (ConversationState.QUEUED, ConversationState.OFFERED, ConversationState.ASSIGNED):
            return await self.wait(conversation, texts)
        if state is ConversationState.BOT:  # back with the bot: a turn number no earlier prompt used
            return self._prompt(speech, conversation.id, time.time_ns() // 1_000_000 % MAX_TURNS, texts)
        return twiml.goodbye(speech, [*texts, rt.config.texts.goodbye])

    # -- POST /twilio/voice/wait?c= (the room's waitUrl, asked again and again while the caller waits) ----
    async def wait_audio(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        """Where the caller stands, as soon as it changes and at least every ``announce_seconds``, between
        stretches of hold audio. Only Say, Play, Pause and Redirect are allowed here."""
        cid = conversation_param(request)
        rt = self.rt
        call = await rt.calls.get(cid)
        now = int(time.time())
        latest = call.get("wait_text")
        due = now - call.int("announced_at") >= rt.config.announce_seconds
        text = ""
        if latest and latest != call.get("announced_text"):
            text = latest
        elif due:
            text = latest or rt.config.texts.still_waiting
        if text:
            await rt.calls.set(cid, announced_at=now, announced_text=text)
        speech = twiml.Speech(call.get("locale") or "en-US", rt.config.voice)
        return answer(twiml.announcements(speech, text, rt.config.hold_audio_url, rt.urls.wait(cid),
                                          rt.config.wait_check_seconds))

    # -- POST /twilio/voice/resume?c=&why= (the caller's call redirected: an agent left, a transfer ...) ----
    async def resume(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid = conversation_param(request)
        why = request.query.get("why", "")
        rt = self.rt
        try:
            conversation = await rt.store.get(cid)
        except ConversationNotFound:
            return answer(twiml.goodbye(rt.speech(None), [rt.config.texts.goodbye]))
        call = await rt.calls.get(cid)
        if call.ended:
            return answer(twiml.goodbye(rt.speech(conversation), []))
        notice = call.get("resume_text") or ""
        if why == "agent_left":  # the agent's phone hung up: back to the head of the queue, told why
            agent_id = request.query.get("a", "")
            notice = (await rt.desk.agent_left(agent_id, cid) or "") if agent_id else ""
            conversation = await rt.store.get(cid)
        texts = [notice] if notice else []
        if why == "unstaffed":  # nobody online to serve the queue: a callback where it takes them
            offered = await self.intake.offer(conversation, [rt.config.texts.nobody_free], "unstaffed",
                                              hold=False)
            if offered is not None:
                return answer(offered)
            await rt.desk.follow_up(cid)
            return answer(twiml.goodbye(rt.speech(conversation), [rt.config.texts.unstaffed]))
        waiting = conversation.state in (ConversationState.QUEUED, ConversationState.OFFERED)
        if why == "wait_over" and waiting:  # the expected wait grew past the queue's limit for callbacks
            eta = int_param(request, "e", 10**6) if "e" in request.query else None
            offered = await self.intake.offer(conversation, [], "wait_over", hold=True, eta_seconds=eta)
            if offered is not None:
                return answer(offered)
        if why == "left_room" and waiting and rt.desk.takes_callbacks(conversation):
            # Star pressed while waiting (the room's only key): a callback instead, or back to the queue.
            offered = await self.intake.offer(conversation, [], "asked", hold=True)
            if offered is not None:
                return answer(offered)
        if why == "left_room" and conversation.state is ConversationState.ASSIGNED and call.agent_id:
            texts = []  # the room ended under them (Twilio's side): back in it
        await rt.calls.set(cid, resume_text=None)
        return answer(await self.waiting_or_after(conversation, texts))

    # -- POST /twilio/voice/recorded?c= (a voicemail) -------------------------------------------------------
    async def recorded(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid, sid = conversation_param(request), call_sid(form)
        rt = self.rt
        url = form.get("RecordingUrl", "")
        recording = form.get("RecordingSid", "")
        if url.startswith("https://") and recording.isalnum():
            seconds = form.get("RecordingDuration", "?")
            message = InboundMessage(
                conversation_id=cid, channel=CHANNEL, text=f"(voicemail, {seconds} s)",
                attachments=[Attachment(url=url, content_type="audio/x-wav", name=f"{recording}.wav")],
                external_id=f"twilio:{recording}", channel_metadata={"call_sid": sid, "voicemail": True},
            )
            with contextlib.suppress(ConversationNotFound):  # the call outlived its conversation
                await rt.sink.accept(message)
        return answer(twiml.goodbye(rt.speech(None), [rt.config.texts.voicemail_saved]))

    # -- POST /twilio/voice/status (the caller's call progress) ---------------------------------------------
    async def status(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        """Idempotent, and never back from a final state: the first final status ends the call once."""
        sid = call_sid(form)
        status = form.get("CallStatus", "")
        if not status.replace("-", "").isalpha():
            raise BadRequest("invalid_status", "CallStatus is missing or malformed.")
        cid = conversation_of_call(sid)
        structlog.contextvars.bind_contextvars(conversation_id=cid, call_sid=sid)
        rt = self.rt
        if not await rt.callbacks.first(sid, status):
            return web.Response(status=204)
        if status in FINAL_STATUSES and await rt.calls.claim(cid, "ended", status):
            try:
                await self._ended(cid, status)
            except Exception:  # Twilio retries it: both claims go back, so the retry does the work
                await rt.calls.release(cid, "ended")
                await rt.callbacks.forget(sid, status)
                raise
        return web.Response(status=204)

    async def _ended(self, cid: str, status: str) -> None:
        rt = self.rt
        call = await rt.calls.get(cid)
        # Phones still ringing for a caller who is gone stop; one answered already hears it at the key press.
        ringing = [call.get(f"{kind}_ringing") for kind in ("offer", "transfer")
                   if not call.get(f"{kind}_sid")]
        if rt.rest is not None:
            for leg in filter(None, ringing):
                stopped = await rt.rest.update_call(leg, status="canceled")
                await rt.checked(cid, "stop an agent's phone ringing", stopped)
        await rt.desk.caller_left(cid)
        log.info("voice.call_ended", status=status)


FINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def _confidence(raw: str | None) -> float:
    try:
        value = float(raw or "")
    except ValueError:
        return 0.0
    return min(max(value, 0.0), 1.0)
