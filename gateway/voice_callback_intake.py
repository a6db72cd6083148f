"""A callback arranged with keys on a call: the same promise the written menu makes (handoff/callbacks.py),
asked in two steps because a caller cannot see a list: the number (1 for the one they call from, or another
keyed in and ended with #), then the time (the number of one read out).

Every step reads the conversation afresh and goes through the callback book, so a choice made here is the
same state, message and event as one made by text; the channel only turns the answer into TwiML.
"""

from __future__ import annotations

import contextlib

import structlog
from aiohttp import web

from channels.voice.desk import BookedCallback, CallbackPrompt, IntakeStep
from gateway import appkeys
from handoff import callback_texts
from handoff.callbacks import CallbackBook, CallbackError
from handoff.ruleset import RuleSet
from sessions.models import Conversation, ConversationState
from sessions.store import ConversationNotFound

log = structlog.get_logger(__name__)

# A promise in one of these states is being kept: nothing to offer.
_KEPT = frozenset({"scheduled", "offering", "dialling", "completed"})
# Shortest keyed-in number worth reading as one (a local number without its area code is not).
_MIN_NUMBER_DIGITS = 6


class KeyedIntake:
    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def book(self) -> CallbackBook:
        return self.app[appkeys.CALLBACKS]

    @property
    def rules(self) -> RuleSet:
        return self.app[appkeys.RULES].rules

    def takes_callbacks(self, conversation: Conversation) -> bool:
        request = conversation.callback
        return request is None and self.book.offered(self.rules, conversation, "asked")

    async def offer(self, conversation_id: str, why: str, eta_seconds: int | None) -> CallbackPrompt | None:
        conversation = await self._get(conversation_id)
        if conversation is None:
            return None
        request = conversation.callback
        if request is None or request.state != "choosing":
            if request is not None and (request.state in _KEPT or why != "asked"):
                return None  # kept already, or turned down (offered again only when asked)
            if why == "wait_over" and not self._wait_over(conversation, eta_seconds):
                return None
            try:
                stored = await self.book.offer(conversation, self.rules, why)
            except CallbackError as exc:
                log.info("callback.not_offered", conversation_id=conversation_id, code=exc.code)
                return None
            if stored is None:
                return None
            conversation = stored.conversation
        return self._number_question(conversation, [])

    def callback_after_seconds(self, conversation: Conversation) -> int | None:
        if conversation.callback is not None or not self.book.offered(self.rules, conversation, "wait_over"):
            return None
        settings = self.rules.queue(conversation.queue or "").callbacks
        return settings.callback_after_seconds if settings is not None else None

    def _wait_over(self, conversation: Conversation, eta_seconds: int | None) -> bool:
        after = self.callback_after_seconds(conversation)
        return (after is not None and eta_seconds is not None and eta_seconds > after
                and conversation.state is ConversationState.QUEUED)

    async def key(self, conversation_id: str, step: IntakeStep, digits: str | None, hold: bool
                  ) -> CallbackPrompt:
        conversation = await self._get(conversation_id)
        request = conversation.callback if conversation is not None else None
        if conversation is None or request is None or request.state != "choosing":
            # Settled meanwhile (by another webhook, an agent, or an expiry): nothing more to ask.
            done = request is not None and request.state in _KEPT
            return CallbackPrompt(IntakeStep.DONE if done else IntakeStep.DECLINED, [])
        if digits == "":  # no answer yet: the same question again
            return self._question(conversation, step, [])
        if digits == "*" or (digits is None and (step is IntakeStep.TIME or request.number is None)):
            if digits is None and not hold and request.number:
                return await self._choose(conversation, 1, hold)  # nobody can take the call now: the soonest
            return await self._no_callback(conversation, hold)
        if step is IntakeStep.NUMBER:
            if digits is None or (digits == "1" and request.number):
                return self._time_question(conversation, [])
            number = (callback_texts.parse_number(digits, callback_texts.region_of(request.number))
                      if len(digits) >= _MIN_NUMBER_DIGITS else None)
            if number is None:
                return self._number_question(conversation, [self._say(conversation, "callback_invalid")])
            stored = await self.book.set_number(conversation, number, self.rules)
            return self._time_question(stored.conversation if stored else conversation, [])
        if digits is not None and digits.isdigit() and 1 <= int(digits) <= len(request.choices):
            return await self._choose(conversation, int(digits), hold)
        return self._time_question(conversation, [self._say(conversation, "callback_invalid")])

    async def _choose(self, conversation: Conversation, n: int, hold: bool) -> CallbackPrompt:
        request = conversation.callback
        assert request is not None
        try:
            stored = await self.book.schedule(conversation, request.choices[n - 1], self.rules)
        except CallbackError as exc:  # the time passed while the caller listened: the times as they are now
            log.info("callback.choice_refused", conversation_id=conversation.id, code=exc.code)
            if exc.code != "slot_unavailable":
                return CallbackPrompt(IntakeStep.DECLINED, [])
            fresh = await self._fresh_offer(conversation)
            if fresh is None:
                return await self._no_callback(conversation, hold)
            return self._time_question(fresh, [self._say(conversation, "callback_invalid")])
        return CallbackPrompt(IntakeStep.DONE, [stored.message.text])

    async def _fresh_offer(self, conversation: Conversation) -> Conversation | None:
        declined = await self.book.decline(conversation, self.rules)
        if declined is None:
            return None
        with contextlib.suppress(CallbackError):
            offered = await self.book.offer(declined.conversation, self.rules, "asked")
            return offered.conversation if offered is not None else None
        return None

    async def _no_callback(self, conversation: Conversation, hold: bool) -> CallbackPrompt:
        stored = await self.book.decline(conversation, self.rules)
        if not hold and await self.app[appkeys.CALL_DESK].follow_up(conversation.id, self.rules):
            # Nobody can take the call now: it waits for the team's follow-up, not on the line.
            self.app[appkeys.DISPATCHER].kick()
        return CallbackPrompt(IntakeStep.DECLINED, [stored.message.text] if stored else [])

    async def booked(self, customer_id: str, channel: str) -> BookedCallback | None:
        conversation = await self.book.booked(customer_id)
        if conversation is None:
            return None
        return BookedCallback(conversation.id,
                              self.book.wording(conversation, "callback_reminder", self.rules, channel))

    async def cancel(self, conversation_id: str, channel: str) -> str:
        """The customer pressed 2 on a call: their booked callback is cancelled (and they are told on the
        channel they arranged it on too). Cancelled or kept meanwhile: nothing to say."""
        try:
            stored = await self.book.cancel(conversation_id, self.rules, by="customer")
        except CallbackError as exc:
            log.info("callback.cancel_refused", conversation_id=conversation_id, code=exc.code)
            return ""
        conversation = stored.conversation
        await self.app[appkeys.CHANNELS].get(conversation.channel).deliver(conversation, stored.message)
        return self.book.wording(conversation, "callback_cancelled", self.rules, channel)

    def _question(self, conversation: Conversation, step: IntakeStep, before: list[str]) -> CallbackPrompt:
        if step is IntakeStep.NUMBER:
            return self._number_question(conversation, before)
        return self._time_question(conversation, before)

    def _number_question(self, conversation: Conversation, before: list[str]) -> CallbackPrompt:
        request = conversation.callback
        key = "callback_confirm_number" if request is not None and request.number else "callback_number"
        return CallbackPrompt(IntakeStep.NUMBER, [*before, self._say(conversation, key)])

    def _time_question(self, conversation: Conversation, before: list[str]) -> CallbackPrompt:
        return CallbackPrompt(IntakeStep.TIME, [*before, self._say(conversation, "callback_choose")])

    def _say(self, conversation: Conversation, key: str) -> str:
        return self.book.wording(conversation, key, self.rules)

    async def _get(self, conversation_id: str) -> Conversation | None:
        try:
            return await self.app[appkeys.STORE].get(conversation_id)
        except ConversationNotFound:
            return None
