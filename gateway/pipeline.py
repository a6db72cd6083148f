"""The pipeline: stores what customers say, lets the bot answer while the conversation is the bot's, asks
the handoff policy after every bot turn, and hands replies to the conversation's channel. It knows
conversation states, never channel names.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime

import structlog

from channels.base import ChannelRegistry
from gateway.bots.base import Bot
from gateway.metrics import GatewayMetrics
from handoff import messages
from handoff.callback_offers import offer_reason
from handoff.callbacks import CallbackBook, CallbackError
from handoff.holder import RulesHolder
from handoff.policy import Action, Decision, TurnInput, decide, needs_load, reroute
from handoff.queues import QueueStore
from handoff.routing import LIVE
from handoff.shadow import ShadowRules
from handoff.sla import Staffing, expected_wait
from sessions.models import (
    BotTurn,
    Conversation,
    ConversationEvent,
    ConversationState,
    Direction,
    HandoffRecord,
    InboundMessage,
    Message,
    SenderKind,
    utcnow,
)
from sessions.store import AppendResult, ConversationStore, TransitionRefused

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
_REMEMBERED_TURNS = 10_000
# States in which a customer's message may be about a callback (choosing one, asking for one, cancelling).
_CALLBACK_AWARE = frozenset({ConversationState.QUEUED, ConversationState.OFFERED, ConversationState.ASYNC,
                             ConversationState.CALLBACK, ConversationState.ASSIGNED})


class Pipeline:
    def __init__(
        self,
        store: ConversationStore,
        bot: Bot,
        channels: ChannelRegistry,
        rules: RulesHolder,
        queues: QueueStore,
        *,
        clock: Clock = utcnow,
        on_handoff: Callable[[Conversation], Awaitable[None]] | None = None,
        return_window_seconds: float = 0,
        staffing: Callable[[], Mapping[str, int]] = dict,
        queue_figures: Callable[[], Mapping[str, Staffing]] = dict,
        callbacks: CallbackBook | None = None,
        shadow: ShadowRules | None = None,
        metrics: GatewayMetrics | None = None,
        on_bot_turn: Callable[[Conversation], None] | None = None,
    ) -> None:
        self.store = store
        self.bot = bot
        self.channels = channels
        self.rules = rules
        self.queues = queues
        self.clock = clock
        self.on_handoff = on_handoff
        self.return_window_seconds = return_window_seconds
        # Agents online per queue, as the desk last saw them (empty until it has looked: nothing changes).
        self.staffing = staffing
        # Capacity and handle time per queue, for the expected wait that overflow limits compare against.
        self.queue_figures = queue_figures
        self.callbacks = callbacks
        # A candidate rule set that decides every bot turn too, without acting (RULES_SHADOW_DIR).
        self.shadow = shadow
        self.metrics = metrics
        # Told of every bot reply kept (review: a conversation the bot keeps may end quietly).
        self.on_bot_turn = on_bot_turn
        # One bot turn at a time per conversation, so replies follow the messages they answer.
        self._turn_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # When each recent conversation's last turn was stored, to spot a snapshot taken before it.
        self._turn_finished: OrderedDict[str, datetime] = OrderedDict()

    @property
    def turns_wait_on_io(self) -> bool:
        return self.bot.waits_on_io

    async def accept(self, inbound: InboundMessage) -> AppendResult:
        """Store a customer's message once per external id; one Redis round trip."""
        message = Message(
            conversation_id=inbound.conversation_id,
            direction=Direction.INBOUND,
            sender=SenderKind.CUSTOMER,
            text=inbound.text,
            attachments=inbound.attachments,
            channel=inbound.channel,
            channel_metadata=inbound.channel_metadata,
            provider_message_id=inbound.external_id,
            client_id=inbound.channel_metadata.get("client_id"),
        )
        accepted = await self.store.append(message, external_id=inbound.external_id,
                                           updates={"last_inbound_at": message.ts})
        log.info("message.accepted", message_id=accepted.message.id, duplicate=accepted.duplicate)
        return accepted

    async def advance(self, accepted: AppendResult) -> None:
        """Move the conversation on after a customer's message: the bot's turn while it owns it.

        Once a conversation has left the bot, the bot stays silent: customer messages are kept for the
        person who takes over.
        """
        if accepted.duplicate:
            return
        cid = accepted.conversation.id
        lock = self._turn_locks.setdefault(cid, asyncio.Lock())
        async with lock:
            conversation = accepted.conversation
            finished = self._turn_finished.get(cid)
            if finished is not None and finished >= conversation.updated_at:
                # Stored before the previous turn finished: its snapshot misses that turn's decision.
                conversation = await self.store.get(cid)
            if conversation.state is ConversationState.RESOLVED:
                conversation = await self._reopen(conversation)
            if conversation.state is ConversationState.BOT:
                await self._bot_turn(conversation, accepted.message)
            elif self.callbacks is not None and conversation.state in _CALLBACK_AWARE:
                stored = await self.callbacks.on_message(conversation, accepted.message, self.rules.rules)
                if stored is not None:
                    await self.channels.get(conversation.channel).deliver(stored.conversation, stored.message)

    async def _reopen(self, conversation: Conversation) -> Conversation:
        """A customer writing after an agent resolved the conversation: soon after, back to that queue and,
        when free, that agent; later, the bot answers again."""
        resolved_at = conversation.resolved_at
        if (conversation.queue and conversation.handoff and resolved_at is not None
                and (utcnow() - resolved_at).total_seconds() <= self.return_window_seconds):
            return await self._return_to_queue(conversation, conversation.queue, conversation.handoff)
        event = ConversationEvent(type="conversation.reopened", conversation_id=conversation.id)
        try:
            await self.store.transition(conversation.id, ConversationState.BOT, event,
                                        allowed_from=[ConversationState.RESOLVED])
        except TransitionRefused:
            return await self.store.get(conversation.id)
        return conversation.model_copy(update={"state": ConversationState.BOT})

    async def _return_to_queue(
        self, conversation: Conversation, queue: str, record: HandoffRecord
    ) -> Conversation:
        rules = self.rules.rules
        if queue not in rules.queues.queues:
            queue = rules.routing.fallback.queue
        locale = record.language or rules.meta.default_locale
        text, _ = messages.render(rules, "welcome_back", locale, conversation.channel, now=self.clock(),
                                  extra={"queue": rules.queue(queue).name})
        notice = Message(conversation_id=conversation.id, direction=Direction.OUTBOUND,
                         sender=SenderKind.SYSTEM, text=text, channel=conversation.channel)
        event = ConversationEvent(type="handoff.queued", conversation_id=conversation.id,
                                  data={"status": record.status(ConversationState.QUEUED), "text": text,
                                        "returning": True})
        added = await self.queues.enqueue(queue, conversation.id, record.priority, utcnow())
        try:
            stored = await self.store.append_and_move(notice, ConversationState.QUEUED, [event],
                                                      updates={"queue": queue},
                                                      allowed_from=[ConversationState.RESOLVED])
        except TransitionRefused:  # another message reopened it first
            if added:
                await self.queues.remove(queue, conversation.id)
            return await self.store.get(conversation.id)
        if self.on_handoff is not None:
            await self.on_handoff(stored.conversation)
        await self.channels.get(conversation.channel).deliver(stored.conversation, stored.message)
        log.info("handoff.returned", queue=queue)
        return stored.conversation

    def _finished(self, stored: AppendResult) -> None:
        self._turn_finished[stored.conversation.id] = stored.conversation.updated_at
        self._turn_finished.move_to_end(stored.conversation.id)
        while len(self._turn_finished) > _REMEMBERED_TURNS:
            self._turn_finished.popitem(last=False)

    async def _bot_turn(self, conversation: Conversation, message: Message) -> None:
        started = time.perf_counter()
        try:
            turn = await self.bot.respond(conversation, message)
        except Exception:  # a bot bug must not cost the customer an answer
            log.exception("bot.crashed", bot=self.bot.name)
            turn = BotTurn(text="Sorry, something went wrong on my side. Please try again.", fallback=True)
        if self.metrics is not None:
            self.metrics.bot_answered(self.bot.name, time.perf_counter() - started)
        heard = message.channel_metadata.get("asr_confidence")
        if isinstance(heard, float) and heard < turn.confidence:
            # Words recognised from speech are only as sure as the recogniser: the bot may have answered
            # what was misheard, so the low-confidence rule sees the lower of the two.
            turn = turn.model_copy(update={"confidence": heard})
        rules = self.rules.rules
        said = self.rules.signals.read(message.text, conversation.signals.language)
        inp = TurnInput(conversation, message.text, turn, said, self.clock())
        decision = decide(inp, rules)
        if self.shadow is not None:
            self.shadow.observe(inp, decision, self.rules, conversation.channel)
        if overflow_queues := needs_load(decision, rules):
            load = await self.queues.load(overflow_queues)
            staffed, figures_now = self.staffing(), self.queue_figures()
            load = {
                name: replace(figures, agents_online=staffed.get(name),
                              expected_wait_seconds=expected_wait(figures.depth, figures_now.get(name)))
                for name, figures in load.items()
            }
            decision = reroute(decision, inp, rules, load)
        log.info("bot.replied", bot=self.bot.name, intent=turn.intent, confidence=turn.confidence,
                 fallback=turn.fallback, action=decision.action.value, rules=decision.rules_version,
                 ms=round((time.perf_counter() - started) * 1000, 2))
        if decision.leaves_bot:
            stored = await self._hand_off(conversation, turn, decision, inp.now)
        else:
            stored = await self._reply(conversation, turn, decision)
        if stored is not None:
            self._finished(stored)
            if self.on_bot_turn is not None and not decision.leaves_bot:
                # Called before the delivery, so a write it queues shares the delivery's round trip.
                self.on_bot_turn(stored.conversation)
            await self.channels.get(conversation.channel).deliver(stored.conversation, stored.message)
            if decision.leaves_bot:
                await self._offer_callback(stored.conversation, message, decision)

    async def _offer_callback(self, conversation: Conversation, message: Message, decision: Decision) -> None:
        """Right after a handoff, a callback where the queue offers one for the reason the customer cannot
        be helped now (closed, nobody online), or because they asked for one."""
        book, route = self.callbacks, decision.route
        if book is None or route is None:
            return
        rules = self.rules.rules
        why = offer_reason(rules, route, message.text)
        if why is None:
            return
        adapter = self.channels.get(conversation.channel)
        if not adapter.capabilities.callback_menu and route.mode == LIVE:
            return  # a caller waits on the line; their channel arranges the callback if nobody comes
        try:
            if adapter.capabilities.callback_menu:
                stored = await book.offer(conversation, rules, "asked" if route.mode == "callback" else why)
            else:
                stored = await book.arrange_soonest(conversation, rules, why)
        except CallbackError as exc:
            log.info("callback.not_offered", code=exc.code)
            return
        if stored is not None:
            await adapter.deliver(stored.conversation, stored.message)

    async def _reply(
        self, conversation: Conversation, turn: BotTurn, decision: Decision
    ) -> AppendResult | None:
        """The bot's reply, stored only while the conversation is still the bot's (another instance may
        have handed it off meanwhile)."""
        if decision.action is not Action.CONTINUE:
            log.info("policy.said", action=decision.action.value, explanation=decision.explanation)
        reply = Message(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            sender=SenderKind.BOT,
            text=decision.text or turn.text,
            channel=conversation.channel,
            turn=turn.meta(),
            channel_metadata={"policy": decision.action.value} if decision.text else {},
        )
        try:
            return await self.store.append_and_move(reply, ConversationState.BOT, [], updates={
                "last_intent": turn.intent or "",
                "last_confidence": turn.confidence,
                "signals": decision.signals,
            }, allowed_from=[ConversationState.BOT], snapshot=conversation)
        except TransitionRefused as exc:
            log.info("bot.reply_dropped", current=exc.current)
            return None

    async def _hand_off(
        self, conversation: Conversation, turn: BotTurn, decision: Decision, now: datetime
    ) -> AppendResult | None:
        """Leave the bot in one atomic step: state, decision, events and the customer's notice together."""
        route = decision.route
        assert route is not None and decision.trigger is not None
        record = decision.record(now, self.rules.rules.queue(route.queue).name)
        state = ConversationState.QUEUED if route.mode == LIVE else ConversationState.ASYNC
        status = record.status(state)
        notice = Message(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            sender=SenderKind.SYSTEM,
            text=decision.text or "",
            channel=conversation.channel,
            channel_metadata={"handoff": {"status": state.value, "queue": route.queue, "mode": route.mode,
                                          "unstaffed": route.unstaffed}},
            # What the bot understood on the turn that handed off, so `rules replay` can replay it.
            turn=turn.meta(),
        )
        events = [
            ConversationEvent(type="handoff.escalated", conversation_id=conversation.id, ts=now, data={
                **record.model_dump(mode="json"),
                "fired": [{"reason": f.reason, "rule": f.rule, "priority": f.priority,
                           "explanation": f.explanation} for f in decision.fired],
                # The bot's reply that the handoff replaced, for review and the agent's context.
                "bot_turn": turn.model_dump(mode="json"),
            }),
            # "escalated": this queued/async step is the handoff itself (not a return, a lapse, a transfer).
            ConversationEvent(type=f"handoff.{state.value}", conversation_id=conversation.id, ts=now,
                              data={"status": status, "text": decision.text, "escalated": True}),
        ]
        tags = list(dict.fromkeys([*conversation.tags, record.reason, *decision.trigger.tags]))
        # Queue first: a crash between the two steps leaves an entry the desk drops on claim (its state
        # is not queued), never a queued conversation that no queue holds. Waiting time is real time,
        # whatever clock the policy decided by.
        added = await self.queues.enqueue(route.queue, conversation.id, record.priority, utcnow(),
                                          live=state is ConversationState.QUEUED)
        try:
            stored = await self.store.append_and_move(
                notice, state, events,
                updates={
                    "queue": route.queue, "priority": record.priority, "tags": tags, "handoff": record,
                    "signals": decision.signals, "last_intent": turn.intent or "",
                    "last_confidence": turn.confidence,
                },
                allowed_from=[ConversationState.BOT],
            )
        except TransitionRefused as exc:
            log.info("handoff.skipped", current=exc.current)
            if added:
                await self.queues.remove(route.queue, conversation.id, live=state is ConversationState.QUEUED)
            return None
        if self.metrics is not None:  # counted here, by the one instance whose step left the bot
            self.metrics.handed_off(record.reason, route.queue, conversation.channel)
        if self.on_handoff is not None:
            await self.on_handoff(stored.conversation)
        log.info("handoff.escalated", reason=record.reason, rule=record.trigger_rule, queue=route.queue,
                 mode=route.mode, priority=record.priority, route_rule=record.route_rule,
                 rules=record.rules_version)
        return stored
