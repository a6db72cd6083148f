"""Callbacks: the customer chooses to be called back instead of waiting, and the desk keeps that promise.

A callback is a state of the conversation, not a side list: the promise (number, slot, attempts) is stored
on the conversation, which is ``callback`` while it waits for its slot. Two sorted sets under the desk's
tag find them: every open promise by when its next attempt is due (the agents' list), and the same due
times popped with a lease (pop_due.lua) so that exactly one instance moves a due callback into its queue,
and another does it if that one dies. At its slot the conversation joins its live queue scored by the
slot's start, so it goes ahead of customers who arrived after the slot began, and the desk offers it to
an agent like any other. Desk-tag steps come first and the conversation's own step second, so a crash in
between leaves an entry the sweeper recognises and drops, never a promise nobody will keep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from redis.commands.core import AsyncScript

from handoff import callback_slots, callback_texts, messages
from handoff.desk import WAITING, Desk, DeskError, _ms
from handoff.ruleset import RuleSet
from sessions.jobs import POP_DUE
from sessions.models import (
    CallbackAttempt,
    CallbackRequest,
    CallbackSlot,
    Conversation,
    ConversationEvent,
    ConversationState,
    Message,
    utcnow,
)
from sessions.store import AppendResult, ConversationNotFound, TransitionRefused, decode_text

log = structlog.get_logger(__name__)

_LEASE_MS = 60_000
# Batches one sweep takes at most: the rest waits for the next sweep, so one sweep never runs for long.
_MAX_BATCHES = 20
# Callbacks of a batch moved at the same time: enough to hide round trips, few enough to leave the
# connection pool to everyone else.
_AT_ONCE = 16
# A promise still being kept (or given up on) stays in the agents' list this long after its last step.
OPEN = ("scheduled", "offering", "dialling")
# An attempt with no word from its legs this long after dialling began is failed as "unknown".
DIAL_DEADLINE_SECONDS = 600
# Which attempt states each step on the phone may follow.
_STEP_FROM = {"dialling": ("offering", "dialling"), "connected": ("dialling",), "completed": ("connected",)}
Clock = Callable[[], datetime]
Lapse = Callable[[str], Awaitable[object]]
Notify = Callable[[AppendResult], Awaitable[object]]


class CallbackError(DeskError):
    """A callback step refused, with an HTTP status and a machine-readable code for the API."""


def default_number(conversation: Conversation) -> str | None:
    """The number to offer: the one the customer is writing or calling from, else one their site vouched
    for. Addresses are tried as phone numbers, whatever channel they belong to."""
    customer = conversation.customer
    ordered = sorted(customer.identities, key=lambda i: i.channel != conversation.channel)
    for identity in ordered:
        number = callback_texts.parse_number(identity.address.removeprefix("whatsapp:"), None)
        if number:
            return number
    phone = customer.trusted("phone")
    return callback_texts.parse_number(phone, None) if phone else None


class CallbackBook:
    def __init__(
        self, desk: Desk, *, clock: Clock = utcnow, lapse: Lapse | None = None, notify: Notify | None = None
    ) -> None:
        self.desk = desk
        self.store = desk.store
        self.redis = desk.redis
        self.keys = desk.keys
        self.clock = clock
        # Ends a pending offer of a conversation (the dispatcher's lapse), so a choice made while an agent
        # was being offered it is not lost.
        self.lapse = lapse
        # Delivers what the clockwork itself tells a customer (an attempt given up when nothing was heard);
        # every other step returns its message to the caller, who delivers it.
        self.notify = notify
        self._index = self.keys.callbacks(desk.desk)
        self._due = self.keys.callbacks_due(desk.desk)
        self._pop_due: AsyncScript = self.redis.register_script(POP_DUE)

    # -- intake ------------------------------------------------------------------------------------------
    def offered(self, rules: RuleSet, conversation: Conversation, why: str) -> bool:
        """Whether the queue's rules offer a callback for ``why`` (after_hours, unstaffed, wait_over);
        one asked for is always offered where the queue takes callbacks."""
        queue = conversation.queue
        if not queue or queue not in rules.queues.queues:
            return False
        settings = rules.queue(queue).callbacks
        return settings is not None and (why == "asked" or why in settings.offer_when)

    async def offer(
        self, conversation: Conversation, rules: RuleSet, why: str, now: datetime | None = None
    ) -> AppendResult | None:
        """Start the intake: the number (when none is known) and the slots, as a numbered menu that every
        written channel can answer and web chat shows as a form. The conversation keeps its place."""
        now = now or self.clock()
        if not self.offered(rules, conversation, why):
            return None
        queue = conversation.queue or ""
        settings = rules.queue(queue).callbacks
        assert settings is not None
        choices = callback_slots.choices(rules, queue, now)
        if not choices:
            return None
        number = default_number(conversation)
        request = CallbackRequest(
            queue=queue,
            number=number,
            choices=choices,
            requested_at=now,
            why=why,
            max_attempts=settings.max_attempts,
            retry_minutes=settings.retry_minutes,
            timezone=self._zone_name(rules, queue, number),
        )
        message = self._menu(rules, conversation, request, now)
        event = ConversationEvent(
            type="callback.offered",
            conversation_id=conversation.id,
            data={"why": why, "choices": len(choices), "number_known": number is not None},
        )
        return await self._note(conversation, message, [event], request, list(WAITING))

    async def offer_if_long_wait(
        self, conversation_id: str, eta_seconds: int, rules: RuleSet, answers_menus: Callable[[str], bool]
    ) -> AppendResult | None:
        """A customer's expected wait passed the queue's ``callback_after_seconds``: offered a callback
        once (not again after they chose, declined or were offered one), on a channel whose customers
        can answer the written menu (``answers_menus(channel)``)."""
        try:
            conversation = await self.store.get(conversation_id)
        except ConversationNotFound:
            return None
        queue = conversation.queue
        settings = rules.queue(queue).callbacks if queue in rules.queues.queues else None
        if (settings is None or settings.callback_after_seconds is None or conversation.callback is not None
                or eta_seconds <= settings.callback_after_seconds
                or conversation.state is not ConversationState.QUEUED
                or not answers_menus(conversation.channel)):
            return None
        return await self.offer(conversation, rules, "wait_over")

    async def arrange_soonest(
        self, conversation: Conversation, rules: RuleSet, why: str, now: datetime | None = None
    ) -> AppendResult | None:
        """For a customer who cannot answer a written menu (a caller): the number they use, as soon as the
        team can, confirmed in the same step."""
        now = now or self.clock()
        queue = conversation.queue or ""
        settings = rules.queue(queue).callbacks if queue in rules.queues.queues else None
        number = default_number(conversation)
        first = callback_slots.asap(rules, queue, now) if settings is not None else None
        if settings is None or number is None or first is None:
            return None
        request = CallbackRequest(
            queue=queue,
            number=number,
            choices=[first],
            requested_at=now,
            why=why,
            max_attempts=settings.max_attempts,
            retry_minutes=settings.retry_minutes,
            timezone=self._zone_name(rules, queue, number),
        )
        return await self.schedule(
            conversation.model_copy(update={"callback": request}), first, rules, now=now
        )

    async def on_message(
        self, conversation: Conversation, message: Message, rules: RuleSet
    ) -> AppendResult | None:
        """A customer's message while they wait, choose or hold a callback: answered when it is about the
        callback (a choice, a number, CANCEL, "call me back"), else None and it stays for the agent."""
        now = self.clock()
        if conversation.callback is None and not callback_texts.asks_for_callback(message.text):
            return None  # most messages while waiting or talking to an agent: nothing to read
        # Read afresh: a form answers with two messages (a number, then a choice), each judged on the
        # previous one's outcome.
        try:
            conversation = await self.store.get(conversation.id)
        except ConversationNotFound:
            return None
        request = conversation.callback
        text = message.text
        if request is None or request.state in ("completed", "cancelled", "failed", "declined"):
            if conversation.state in WAITING and callback_texts.asks_for_callback(text):
                return await self.offer(conversation, rules, "asked", now)
            return None
        if callback_texts.is_cancel(text):
            if request.state == "choosing":
                return await self.decline(conversation, rules)
            try:
                return await self.cancel(conversation.id, rules, by="customer")
            except CallbackError as exc:
                log.info("callback.cancel_refused", conversation_id=conversation.id, code=exc.code)
                return None
        if request.state != "choosing":
            return None
        reply = callback_texts.read_reply(text, request, callback_texts.region_of(request.number))
        if reply.number is not None:
            return await self.set_number(conversation, reply.number, rules)
        if reply.choice is not None:
            if request.number is None:
                return await self._say(conversation, rules, "callback_number", now, request)
            return await self.schedule(conversation, request.choices[reply.choice - 1], rules, now=now)
        if reply.bad_number or reply.out_of_range:
            return await self._say(conversation, rules, "callback_invalid", now, request)
        return None

    async def set_number(
        self, conversation: Conversation, number: str, rules: RuleSet
    ) -> AppendResult | None:
        """Another number to call while choosing: kept, and the menu of times shown again for it."""
        request = conversation.callback
        if request is None or request.state != "choosing":
            return None
        request = request.model_copy(
            update={"number": number, "timezone": self._zone_name(rules, request.queue, number)}
        )
        menu = self._menu(rules, conversation, request, self.clock())
        return await self._note(conversation, menu, [], request, [conversation.state])

    def wording(
        self, conversation: Conversation, key: str, rules: RuleSet, channel: str | None = None
    ) -> str:
        """A callback message for this conversation's promise as it stands, in its channel's words or
        ``channel``'s (what a call speaks between key presses, without storing it again)."""
        request = conversation.callback
        if request is None:
            return ""
        if channel is not None:
            conversation = conversation.model_copy(update={"channel": channel})
        return self._text(rules, conversation, key, self.clock(), request).text

    async def booked(self, customer_id: str) -> Conversation | None:
        """The customer's callback still waiting for its time, on whatever channel they arranged it."""
        raw = await self.redis.get(self.keys.customer_callback(customer_id))
        if raw is None:
            return None
        try:
            conversation = await self.store.get(decode_text(raw))
        except ConversationNotFound:
            return None
        request = conversation.callback
        waiting = request is not None and request.state == "scheduled"
        return conversation if waiting and conversation.state is ConversationState.CALLBACK else None

    async def schedule(
        self,
        conversation: Conversation,
        slot: CallbackSlot,
        rules: RuleSet,
        *,
        now: datetime | None = None,
        number: str | None = None,
        timezone: str | None = None,
    ) -> AppendResult:
        """The customer's choice confirmed: the conversation leaves its queue and waits for its slot."""
        now = now or self.clock()
        request = conversation.callback
        if request is None or request.state != "choosing" or conversation.state not in WAITING:
            raise CallbackError(409, "not_choosing", "No callback is being arranged in this conversation.")
        number = number or request.number
        if number is None:
            raise CallbackError(422, "number_required", "A phone number to call is needed.")
        slot = callback_slots.in_utc(slot)
        if why := callback_slots.keepable(rules, request.queue, slot, now):
            raise CallbackError(422, "slot_unavailable", f"That time cannot be promised: {why}.")
        start = max(slot.start, now)
        request = request.model_copy(
            update={
                "state": "scheduled",
                "number": number,
                "slot": slot,
                "confirmed_at": now,
                "due_at": start,
                "choices": [],
                "timezone": timezone or request.timezone,
            }
        )
        # Desk first: a crash after this leaves a due entry the sweeper drops (the state is not callback).
        await self._plan(conversation.id, start)
        await self.redis.set(self.keys.customer_callback(conversation.customer.id), conversation.id,
                             px=self.store.ttl_ms)
        if conversation.state is ConversationState.OFFERED and self.lapse is not None:
            await self.lapse(conversation.id)
        notice = self._text(rules, conversation, "callback_scheduled", now, request)
        event = self._event(conversation, request, notice, "scheduled")
        try:
            stored = await self.store.append_and_move(
                notice,
                ConversationState.CALLBACK,
                [event],
                updates={"callback": request},
                allowed_from=list(WAITING),
            )
        except TransitionRefused as exc:
            await self._unplan(conversation.id)
            raise CallbackError(409, "not_waiting", f"The conversation is {exc.current} now.") from None
        if conversation.queue:
            await self.desk.queues.remove(conversation.queue, conversation.id)
            await self.desk.queues.remove(conversation.queue, conversation.id, live=False)
        log.info(
            "callback.scheduled",
            conversation_id=conversation.id,
            queue=request.queue,
            due_in_seconds=round((start - now).total_seconds()),
        )
        return stored

    # -- agents' changes -----------------------------------------------------------------------------------
    async def cancel(
        self, conversation_id: str, rules: RuleSet, *, by: str, note: str = "", agent_name: str = ""
    ) -> AppendResult:
        """Cancel wins over any attempt not yet dialling: a scheduled promise, or one waiting for (or just
        accepted by) an agent. Once a phone rings it is too late to take back."""
        conversation = await self._get(conversation_id)
        request = conversation.callback
        if request is None or request.state not in ("scheduled", "offering"):
            raise CallbackError(
                409, "not_cancellable", "There is no callback to cancel, or it is being dialled."
            )
        state = conversation.state
        if state is ConversationState.OFFERED and self.lapse is not None:
            await self.lapse(conversation_id)
        if state is ConversationState.ASSIGNED and conversation.agent:
            await self.desk._release_desk(conversation.agent, conversation_id, requeue=None)
        now = self.clock()
        request = self._end_attempt(request, now, "cancelled", "cancelled").model_copy(
            update={"state": "cancelled", "note": note or request.note, "due_at": None}
        )
        notice = self._text(rules, conversation, "callback_cancelled", now, request)
        event = self._event(
            conversation, request, notice, "cancelled", by=by, note=note, agent_name=agent_name
        )
        try:
            stored = await self.store.append_and_move(
                notice,
                ConversationState.RESOLVED,
                [event],
                updates={"callback": request, "agent": "", "resolved_at": utcnow()},
                allowed_from=[
                    ConversationState.CALLBACK,
                    ConversationState.QUEUED,
                    ConversationState.OFFERED,
                    ConversationState.ASSIGNED,
                ],
            )
        except TransitionRefused as exc:
            raise CallbackError(409, "not_cancellable", f"The conversation is {exc.current} now.") from None
        await self._unplan(conversation_id)
        if conversation.queue:
            await self.desk.queues.remove(conversation.queue, conversation_id)
        log.info("callback.cancelled", conversation_id=conversation_id, by=by)
        return stored

    async def reschedule(
        self,
        conversation_id: str,
        slot: CallbackSlot,
        rules: RuleSet,
        *,
        note: str = "",
        agent_name: str = "",
    ) -> AppendResult:
        conversation = await self._get(conversation_id)
        request = conversation.callback
        if conversation.state is not ConversationState.CALLBACK or request is None:
            raise CallbackError(409, "not_scheduled", "Only a callback waiting for its slot can be moved.")
        now = self.clock()
        slot = callback_slots.in_utc(slot)
        if why := callback_slots.keepable(rules, request.queue, slot, now):
            raise CallbackError(422, "slot_unavailable", f"That time cannot be promised: {why}.")
        start = max(slot.start, now)
        request = request.model_copy(
            update={"slot": slot, "due_at": start, "state": "scheduled", "note": note or request.note}
        )
        await self._plan(conversation_id, start)
        notice = self._text(rules, conversation, "callback_moved", now, request)
        event = self._event(conversation, request, notice, "rescheduled", note=note, agent_name=agent_name)
        try:
            return await self.store.append_and_move(
                notice,
                ConversationState.CALLBACK,
                [event],
                updates={"callback": request},
                allowed_from=[ConversationState.CALLBACK],
            )
        except TransitionRefused as exc:
            raise CallbackError(409, "not_scheduled", f"The conversation is {exc.current} now.") from None

    # -- keeping the promise -------------------------------------------------------------------------------
    async def run_due(self, rules: RuleSet, now: datetime | None = None, limit: int = 200) -> list[str]:
        """Callbacks whose time has come join their live queue (each on exactly one instance). Batches of
        ``limit`` are taken until none is full, each batch's callbacks moved concurrently."""
        now = now or self.clock()
        started: list[str] = []
        gate = asyncio.Semaphore(_AT_ONCE)
        for _ in range(_MAX_BATCHES):
            raw = await self._pop_due(keys=[self._due], args=[_ms(now), _LEASE_MS, limit])
            if not raw:
                break
            ids = [decode_text(r) for r in raw]
            found = {c.id: c for c in await self.store.get_many(ids)}
            moved = await asyncio.gather(*(self._gated(gate, found.get(cid), cid, rules, now) for cid in ids))
            started += [cid for cid, ok in zip(ids, moved, strict=True) if ok]
            if len(ids) < limit:
                break
        return started

    async def _gated(
        self, gate: asyncio.Semaphore, conversation: Conversation | None, cid: str, rules: RuleSet,
        now: datetime,
    ) -> bool:
        async with gate:
            return await self._due_one(conversation, cid, rules, now)

    async def _due_one(
        self, conversation: Conversation | None, cid: str, rules: RuleSet, now: datetime
    ) -> bool:
        request = conversation.callback if conversation is not None else None
        if conversation is not None and request is not None and request.state == "dialling":
            # The attempt's deadline passed with no word from its legs: failed, and never dialled again.
            await self.redis.zrem(self._due, cid)
            if request.current is not None and request.current.state == "dialling":
                told = await self.attempt_failed(cid, "unknown", rules)
                if told is not None and self.notify is not None:
                    await self.notify(told)
            return False
        if conversation is None or request is None or conversation.state is not ConversationState.CALLBACK:
            await self.redis.zrem(self._due, cid)
            if conversation is None or request is None or request.state not in OPEN:
                await self.redis.zrem(self._index, cid)
            return False
        queue = request.queue if request.queue in rules.queues.queues else rules.routing.fallback.queue
        hours = rules.queue(queue).hours
        if not rules.is_open(hours, now):  # never call outside the team's hours, whatever was planned
            opens = rules.next_open(hours, now)
            if opens is None:
                return False  # left to its lease: tried again in a minute
            await self._plan(cid, opens)
            return False
        attempt = CallbackAttempt(n=len(request.attempts) + 1, started_at=now)
        request = request.model_copy(
            update={"state": "offering", "attempts": [*request.attempts, attempt], "queue": queue}
        )
        since = request.slot.start if request.slot is not None else now
        await self.desk.queues.enqueue(queue, cid, conversation.priority, min(since, request.due_at or since))
        event = ConversationEvent(
            type="callback.due",
            conversation_id=cid,
            data={"attempt": attempt.n, "queue": queue, "status": {"status": "callback", "callback": "due"}},
        )
        try:
            await self.store.transition(
                cid,
                ConversationState.QUEUED,
                event,
                updates={"callback": request, "queue": queue},
                allowed_from=[ConversationState.CALLBACK],
            )
        except (TransitionRefused, ConversationNotFound):
            await self.desk.queues.remove(queue, cid)
            return False
        await self.redis.zrem(self._due, cid)
        log.info("callback.due", conversation_id=cid, queue=queue, attempt=attempt.n)
        return True

    async def attempt_failed(
        self, conversation_id: str, outcome: str, rules: RuleSet, *, agent_id: str | None = None
    ) -> AppendResult | None:
        """An attempt that did not reach the customer: retried after ``retry_minutes`` (inside open hours)
        until ``max_attempts``; after the last the customer is told and the team follows up in writing."""
        conversation = await self._get(conversation_id)
        request = conversation.callback
        if request is None or request.state not in OPEN:
            return None
        now = self.clock()
        holder = agent_id or conversation.agent
        if conversation.state is ConversationState.ASSIGNED and holder:
            await self.desk._release_desk(holder, conversation_id, requeue=None)
        elif conversation.state in (ConversationState.QUEUED, ConversationState.OFFERED):
            if conversation.state is ConversationState.OFFERED and self.lapse is not None:
                await self.lapse(conversation_id)
            await self.desk.queues.remove(request.queue, conversation_id)
        request = self._end_attempt(request, now, "failed", outcome)
        tried = len(request.attempts)
        queue = request.queue
        allowed = [ConversationState.ASSIGNED, ConversationState.QUEUED, ConversationState.OFFERED]
        if tried < request.max_attempts:
            retry = now + timedelta(minutes=request.retry_minutes)
            retry = rules.next_open(rules.queue(queue).hours, retry) or retry
            request = request.model_copy(update={"state": "scheduled", "due_at": retry})
            await self._plan(conversation_id, retry)
            notice = self._text(rules, conversation, "callback_retry", now, request,
                                slot=CallbackSlot(start=retry, asap=True))
            event = self._event(conversation, request, notice, "retry", outcome=outcome, attempt=tried)
            to = ConversationState.CALLBACK
        else:
            request = request.model_copy(update={"state": "failed", "due_at": None})
            since = conversation.handoff.decided_at if conversation.handoff else now
            await self.desk.queues.enqueue(queue, conversation_id, conversation.priority, since, live=False)
            await self.redis.zrem(self._due, conversation_id)
            notice = self._text(rules, conversation, "callback_failed", now, request)
            event = self._event(
                conversation,
                request,
                notice,
                "failed",
                outcome=outcome,
                attempt=tried,
                reason=f"callback not answered after {tried} attempts",
            )
            to = ConversationState.ASYNC
        try:
            stored = await self.store.append_and_move(
                notice, to, [event], updates={"callback": request, "agent": ""}, allowed_from=allowed
            )
        except TransitionRefused:
            return None
        log.info(
            "callback.attempt_failed",
            conversation_id=conversation_id,
            outcome=outcome,
            attempt=tried,
            retry=to is ConversationState.CALLBACK,
        )
        return stored

    async def step(self, conversation_id: str, attempt: int, step: str, **changes: str) -> bool:
        """Record the current attempt's progress on the phone: ``dialling`` (from offering; again to add the
        agent's CallSid), ``connected`` (the customer picked up) and ``completed`` (they talked). False, and
        nothing written, when ``attempt`` is not the current one or has already ended another way."""
        try:
            conversation = await self.store.get(conversation_id)
        except ConversationNotFound:
            return False
        request = conversation.callback
        current = request.current if request is not None else None
        if request is None or current is None or current.n != attempt:
            return False
        if current.state not in _STEP_FROM.get(step, ()):
            return False
        now = self.clock()
        attempt_state = "completed" if step == "completed" else step
        updated = current.model_copy(update={"state": attempt_state, **changes,
                                             **({"ended_at": now} if step == "completed" else {})})
        promise = {"dialling": "dialling", "connected": "dialling", "completed": "completed"}[step]
        request = request.model_copy(update={"attempts": [*request.attempts[:-1], updated], "state": promise})
        event = ConversationEvent(type=f"callback.{step}", conversation_id=conversation_id,
                                  data={"attempt": attempt, **changes})
        try:
            await self.store.transition(conversation_id, conversation.state, event,
                                        updates={"callback": request}, allowed_from=[conversation.state])
        except (TransitionRefused, ConversationNotFound):
            return False
        if step == "dialling" and current.state == "offering":
            # The attempt's deadline: no word from either leg by then, it failed (never dialled again).
            await self._plan(conversation_id, now + timedelta(seconds=DIAL_DEADLINE_SECONDS))
        elif step == "completed":
            await self._unplan(conversation_id)
        return True

    # -- the agents' list ----------------------------------------------------------------------------------
    async def listing(
        self, queues: Iterable[str] | None, state: str | None, now: datetime | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Open promises (and ones given up on) for the given queues, soonest first: ``scheduled`` (waiting
        for their slot), ``due`` (being offered or dialled), ``failed`` (every attempt failed)."""
        now = now or self.clock()
        ids = [decode_text(member) for member in await self.redis.zrange(self._index, 0, limit - 1)]
        wanted = set(queues) if queues is not None else None
        rows = []
        for conversation in await self.store.get_many(ids):
            request = conversation.callback
            if request is None or (wanted is not None and request.queue not in wanted):
                continue
            shown = self.view_state(conversation, now)
            if shown is None or (state is not None and shown != state):
                continue
            rows.append(self.view(conversation, shown))
        return rows

    @staticmethod
    def view_state(conversation: Conversation, now: datetime) -> str | None:
        request = conversation.callback
        if request is None:
            return None
        if request.state == "failed" and conversation.state is ConversationState.ASYNC:
            return "failed"
        if request.state == "scheduled":
            return "due" if request.due_at is not None and request.due_at <= now else "scheduled"
        if request.state in ("offering", "dialling"):
            return "due"
        return None

    @staticmethod
    def view(conversation: Conversation, shown: str) -> dict[str, Any]:
        request = conversation.callback
        assert request is not None
        slot = request.slot
        return {
            "conversation_id": conversation.id,
            "state": shown,
            "queue": request.queue,
            "channel": conversation.channel,
            "customer_name": conversation.customer.name,
            "number": request.number,
            "asap": bool(slot and slot.asap),
            "slot_start": slot.start.isoformat() if slot else None,
            "slot_end": slot.end.isoformat() if slot and slot.end else None,
            "due_at": request.due_at.isoformat() if request.due_at else None,
            "requested_at": request.requested_at.isoformat(),
            "why": request.why,
            "attempts": len(request.attempts),
            "max_attempts": request.max_attempts,
            "last_outcome": request.current.outcome if request.current else None,
            "note": request.note,
            "reason": conversation.handoff.reason if conversation.handoff else None,
        }

    # -- helpers -------------------------------------------------------------------------------------------
    async def _plan(self, conversation_id: str, at: datetime) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._index, {conversation_id: _ms(at)})
            pipe.zadd(self._due, {conversation_id: _ms(at)})
            await pipe.execute()

    async def _unplan(self, conversation_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self._index, conversation_id)
            pipe.zrem(self._due, conversation_id)
            await pipe.execute()

    async def _get(self, conversation_id: str) -> Conversation:
        try:
            return await self.store.get(conversation_id)
        except ConversationNotFound:
            raise CallbackError(
                404, "conversation_not_found", f"No conversation {conversation_id}."
            ) from None

    @staticmethod
    def _end_attempt(request: CallbackRequest, now: datetime, state: str, outcome: str) -> CallbackRequest:
        current = request.current
        if current is None or current.state in ("failed", "completed", "cancelled"):
            return request
        ended = current.model_copy(update={"state": state, "outcome": outcome, "ended_at": now})
        return request.model_copy(update={"attempts": [*request.attempts[:-1], ended]})

    @staticmethod
    def _zone_name(rules: RuleSet, queue: str, number: str | None) -> str | None:
        zone = callback_texts.zone_for(number, rules.zone_of(rules.queue(queue).hours))
        return zone.key if isinstance(zone, ZoneInfo) else None

    @staticmethod
    def _wording(
        rules: RuleSet, conversation: Conversation, request: CallbackRequest, now: datetime
    ) -> callback_texts.Wording:
        zone = ZoneInfo(request.timezone) if request.timezone else None
        return callback_texts.Wording(
            rules, callback_texts.locale_of(conversation, rules), conversation.channel, zone, now
        )

    def _text(
        self, rules: RuleSet, conversation: Conversation, key: str, now: datetime, request: CallbackRequest,
        *, slot: CallbackSlot | None = None,
    ) -> Message:
        w = self._wording(rules, conversation, request, now)
        slot = slot or request.slot
        queues = rules.queues.queues
        values = {
            "queue": queues[request.queue].name if request.queue in queues else request.queue,
            "number": callback_texts.shown_number(request.number) if request.number else "",
            "number_end": callback_texts.number_end(request.number),
            "slot": callback_texts.describe_slot(slot, w) if slot else "",
            "choices": callback_texts.menu(request.choices, w),
            "attempts": str(len(request.attempts)),
        }
        text, _ = messages.render(rules, key, w.locale, conversation.channel, now=now, extra=values)
        return Message.notice(conversation, text)

    def _menu(
        self, rules: RuleSet, conversation: Conversation, request: CallbackRequest, now: datetime
    ) -> Message:
        """The number question, or the slots: with the form's data for channels that can show one."""
        key = "callback_choose" if request.number else "callback_number"
        message = self._text(rules, conversation, key, now, request)
        w = self._wording(rules, conversation, request, now)
        message.channel_metadata = {
            "callback_offer": {
                "number": request.number,
                "queue": request.queue,
                "timezone": request.timezone,
                "choices": [
                    {
                        "n": i,
                        "label": callback_texts.describe_slot(s, w),
                        "start": s.start.isoformat(),
                        "end": s.end.isoformat() if s.end else None,
                        "asap": s.asap,
                    }
                    for i, s in enumerate(request.choices, 1)
                ],
            }
        }
        return message

    async def _say(
        self, conversation: Conversation, rules: RuleSet, key: str, now: datetime, request: CallbackRequest
    ) -> AppendResult | None:
        return await self._note(
            conversation,
            self._text(rules, conversation, key, now, request),
            [],
            request,
            [conversation.state],
        )

    async def decline(self, conversation: Conversation, rules: RuleSet) -> AppendResult | None:
        """The customer chose no callback: they keep their place, and are not offered one again unless they
        ask."""
        request = conversation.callback
        if request is None or request.state != "choosing":
            return None
        notice = self._text(rules, conversation, "callback_not_now", self.clock(), request)
        event = ConversationEvent(type="callback.declined", conversation_id=conversation.id)
        declined = request.model_copy(update={"state": "declined", "choices": []})
        return await self._note(conversation, notice, [event], declined, [conversation.state])

    async def _note(
        self,
        conversation: Conversation,
        message: Message,
        events: list[ConversationEvent],
        request: CallbackRequest,
        allowed: list[ConversationState],
    ) -> AppendResult | None:
        """A message about the callback and the promise's new form, the conversation's state unchanged."""
        try:
            return await self.store.append_and_move(
                message, conversation.state, events, updates={"callback": request}, allowed_from=allowed
            )
        except TransitionRefused:
            return None

    @staticmethod
    def _event(
        conversation: Conversation, request: CallbackRequest, notice: Message, step: str, **data: Any
    ) -> ConversationEvent:
        slot = request.slot
        status = {
            **(
                conversation.handoff.status(ConversationState.CALLBACK)
                if conversation.handoff
                else {"status": "callback", "queue": request.queue}
            ),
            "callback": step,
            "slot_start": slot.start.isoformat() if slot else None,
            "slot_end": slot.end.isoformat() if slot and slot.end else None,
            "due_at": request.due_at.isoformat() if request.due_at else None,
            "attempts": len(request.attempts),
        }
        return ConversationEvent(
            type="handoff.callback",
            conversation_id=conversation.id,
            data={"status": status, "text": notice.text, **data},
        )
