"""A caller arranging a callback with keys: the number (1 for their own, or another keyed in and ended with
#), then the time; star for no callback. Offered when the handoff offers one (asked, after hours, nobody
online), when the expected wait is long, and to a waiting caller who presses star.

What to ask and what an answer means is the desk's (gateway/voice_callback_intake.py, through
``VoiceDesk``); this turns each step into TwiML, counts silences in the URL like a turn does, and sends a
caller who chose no callback back to their place in the queue.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from channels.voice import twiml
from channels.voice.desk import CallbackPrompt, IntakeStep
from channels.voice.params import BadRequest, answer, conversation_param, int_param
from channels.voice.runtime import VoiceRuntime
from sessions.models import Conversation
from sessions.store import ConversationNotFound

log = structlog.get_logger(__name__)

ASKING = frozenset({IntakeStep.NUMBER, IntakeStep.TIME})
_KEYS = frozenset("0123456789*")
Waiting = Callable[[Conversation, list[str]], Awaitable[str]]


class CallbackIntake:
    def __init__(self, rt: VoiceRuntime, waiting: Waiting) -> None:
        self.rt = rt
        # Where a caller who chose no callback goes, by the conversation's state (CallerFlow's).
        self.waiting = waiting

    async def offer(self, conversation: Conversation, texts: list[str], why: str, *, hold: bool,
                    eta_seconds: int | None = None) -> str | None:
        """The first question after ``texts``, or None when no callback is offered for ``why``."""
        prompt = await self.rt.desk.callback_offer(conversation.id, why, eta_seconds)
        if prompt is None:
            return None
        log.info("voice.callback_offered", why=why, hold=hold)
        return await self._answer(conversation, texts, prompt, hold, 0)

    # -- POST /twilio/voice/callback/intake?c=&step=&h=&s= -------------------------------------------------
    async def key(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        cid = conversation_param(request)
        raw_step = request.query.get("step", "")
        if raw_step not in (IntakeStep.NUMBER.value, IntakeStep.TIME.value):
            raise BadRequest("invalid_step", "The URL's step= must be number or time.")
        step, hold = IntakeStep(raw_step), request.query.get("h") == "1"
        silences = int_param(request, "s", 1000) if "s" in request.query else 0
        structlog.contextvars.bind_contextvars(conversation_id=cid)
        rt = self.rt
        digits: str | None = "".join(c for c in form.get("Digits", "") if c in _KEYS)
        if not digits:
            silences += 1
            digits = "" if silences <= rt.config.max_silences else None
        else:
            silences = 0
        prompt = await rt.desk.callback_key(cid, step, digits, hold)
        try:
            conversation = await rt.store.get(cid)
        except ConversationNotFound:
            return answer(twiml.goodbye(rt.speech(None), [rt.config.texts.goodbye]))
        log.info("voice.callback_key", step=step.value, pressed=digits is not None and digits != "",
                 next=prompt.step.value)
        counted = silences if prompt.step is step else 0  # silences are counted per question
        return answer(await self._answer(conversation, [], prompt, hold, counted))

    async def _answer(self, conversation: Conversation, texts: list[str], prompt: CallbackPrompt, hold: bool,
                      silences: int) -> str:
        rt = self.rt
        speech = rt.speech(conversation)
        said = [*texts, *prompt.say]
        if prompt.step in ASKING:
            url = rt.urls.intake(conversation.id, prompt.step.value, hold, silences)
            digits = 1 if prompt.step is IntakeStep.TIME else None
            return twiml.keys(speech, said, url, timeout_seconds=rt.config.gather_timeout_seconds,
                              num_digits=digits)
        if prompt.step is IntakeStep.DECLINED:
            if hold:
                return await self.waiting(conversation, said)
            said.append(rt.config.texts.goodbye)
        return twiml.goodbye(speech, said)
