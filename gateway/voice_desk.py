"""The desk as the voice channel needs it (channels/voice/desk.py), built from the app's own desk parts.

The gateway is where channels and the desk meet: a key press becomes the desk's atomic claim, a hang-up an
abandon or a hand-back, and the context package becomes a brief an agent can take in by ear.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import structlog
from aiohttp import web
from babel.dates import format_time

from channels.voice.desk import Accepted, AgentLine, BookedCallback, CallbackPrompt, IntakeStep
from gateway import appkeys
from gateway.voice_callback_intake import KeyedIntake
from handoff import messages
from handoff.agents import HEARTBEAT_SECONDS
from handoff.calls import CallDesk
from handoff.context import build_package
from handoff.desk import DeskError
from sessions.models import Conversation, ConversationEvent, ConversationState, SenderKind, utcnow
from sessions.store import ConversationNotFound, TransitionRefused

log = structlog.get_logger(__name__)

# Desk refusals that mean another agent has it, and those that mean nobody is waiting any more.
# How long a call keeps its agent present without a console; a call's end (or this) gives it back.
ON_THE_PHONE_SECONDS = 4 * 3600
_TAKEN = frozenset({"claimed_by_another", "offered_to_another"})
_UNABLE = frozenset({"not_online", "at_capacity"})


class GatewayVoiceDesk:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.intake = KeyedIntake(app)

    @property
    def calls(self) -> CallDesk:
        return self.app[appkeys.CALL_DESK]

    async def agent(self, agent_id: str) -> AgentLine | None:
        agent = await self.app[appkeys.AGENTS].get(agent_id)
        return AgentLine(agent.id, agent.name, agent.phone) if agent is not None else None

    async def on_the_phone(self, agent_id: str, talking: bool) -> None:
        seconds = ON_THE_PHONE_SECONDS if talking else HEARTBEAT_SECONDS
        await self.app[appkeys.AGENTS].present_until(agent_id, utcnow() + timedelta(seconds=seconds))

    async def brief(self, conversation_id: str) -> list[str]:
        """Reason, topic, who is calling (tier, what is verified), what was collected, one line of summary,
        and a transfer's note: the context package, short enough to take in by ear."""
        app = self.app
        store = app[appkeys.STORE]
        try:
            conversation = await store.get(conversation_id)
        except ConversationNotFound:
            return []
        transcript, events = await store.transcript_and_events(conversation_id)
        package = build_package(conversation, transcript, app[appkeys.SUMMARIZER], events)
        customer = conversation.customer
        # A caller's number says who they may be, not who they are: named as such until verified.
        who = "a caller"
        if customer.name:
            who = customer.name if "name" in customer.verified_fields else f"the number of {customer.name}"
        if customer.tier:
            who += f", {customer.tier} tier"
        verified = ", ".join(package.verification.fields)
        said = [f"Call from {who}. " + (f"Verified: {verified}." if verified else "Nothing verified.")]
        handoff = conversation.handoff
        if handoff is not None:
            said.append(f"Reason: {_words(handoff.reason)}, for {handoff.queue_name or handoff.queue}.")
        if package.intent:
            said.append(f"Topic: {_words(package.intent)}.")
        if package.fields:
            collected = ", ".join(f"{_words(k)} {v}" for k, v in package.fields.items())
            said.append(f"Collected: {collected}.")
        words = [m.text for m in transcript if m.sender is SenderKind.CUSTOMER and m.text.strip()]
        if words:
            said.append(f"They said: {_clip(words[0])}." if len(words) == 1 else
                        f"They said first: {_clip(words[0])}. And last: {_clip(words[-1])}.")
        transfers = [n for n in conversation.notes if n.get("kind") == "transfer" and n.get("note")]
        note = transfers[-1] if transfers else None
        if note is not None:
            said.insert(0, f"Transfer from {note.get('from_agent')}: {note.get('note')}.")
        return said

    async def accept(self, agent_id: str, conversation_id: str) -> Accepted:
        app = self.app
        agent = await app[appkeys.AGENTS].get(agent_id)
        if agent is None:
            return Accepted.GONE
        try:
            await app[appkeys.DESK].claim(agent, conversation_id, app[appkeys.RULES].rules, via="phone")
        except DeskError as exc:
            log.info("voice.claim_refused", code=exc.code)
            if exc.code in _UNABLE:
                return Accepted.UNABLE
            return Accepted.TAKEN if exc.code in _TAKEN else Accepted.GONE
        app[appkeys.DISPATCHER].kick()
        return Accepted.WON

    async def hold_offer(self, agent_id: str, conversation_id: str, seconds: int) -> None:
        until = utcnow() + timedelta(seconds=seconds)
        await self.app[appkeys.DISPATCHER].extend(conversation_id, agent_id, until)

    async def pass_offer(self, agent_id: str, conversation_id: str) -> None:
        dispatcher = self.app[appkeys.DISPATCHER]
        await dispatcher.lapse(conversation_id, rules_agent=agent_id)
        dispatcher.kick()

    async def caller_left(self, conversation_id: str) -> None:
        """Abandoned while waiting; freed from the agent who had the caller; or just over."""
        app = self.app
        if await self.calls.abandon(conversation_id, utcnow()):
            app[appkeys.DISPATCHER].kick()
            return
        store = app[appkeys.STORE]
        try:
            conversation = await store.get(conversation_id)
        except ConversationNotFound:
            return
        if conversation.state is ConversationState.ASSIGNED and conversation.agent:
            agent = await app[appkeys.AGENTS].get(conversation.agent)
            if agent is not None:
                with contextlib.suppress(DeskError):  # resolved in the console meanwhile
                    await app[appkeys.DESK].resolve(agent, conversation_id, "caller_hung_up", False,
                                                    app[appkeys.RULES].rules)
                app[appkeys.DISPATCHER].kick()
        elif conversation.state is ConversationState.BOT:
            event = ConversationEvent(type="call.ended", conversation_id=conversation_id)
            with contextlib.suppress(TransitionRefused, ConversationNotFound):
                await store.transition(conversation_id, ConversationState.RESOLVED, event,
                                       allowed_from=[ConversationState.BOT])

    async def agent_left(self, agent_id: str, conversation_id: str) -> str | None:
        app = self.app
        try:
            conversation = await app[appkeys.STORE].get(conversation_id)
        except ConversationNotFound:
            return None
        if conversation.state is not ConversationState.ASSIGNED or conversation.agent != agent_id:
            return None
        notice = await app[appkeys.DESK].hand_back_one(agent_id, conversation_id, "the agent hung up",
                                                       app[appkeys.RULES].rules)
        app[appkeys.DISPATCHER].kick()
        return notice

    async def handover(self, conversation_id: str, from_agent: str, to_agent: str) -> bool:
        return await self.calls.handover(conversation_id, from_agent, to_agent)

    async def transfer_failed(
        self, conversation_id: str, from_agent: str, to_agent: str, reason: str
    ) -> None:
        await self.calls.transfer_failed(conversation_id, from_agent, to_agent, reason)

    async def follow_up(self, conversation_id: str) -> None:
        """Nobody online to take the call: a follow-up, kept as a callback on the caller's number as soon as
        the team can where the queue takes callbacks."""
        app = self.app
        rules = app[appkeys.RULES].rules
        if not await self.calls.follow_up(conversation_id, rules):
            return
        app[appkeys.DISPATCHER].kick()
        with contextlib.suppress(ConversationNotFound, DeskError):
            conversation = await app[appkeys.STORE].get(conversation_id)
            await app[appkeys.CALLBACKS].arrange_soonest(conversation, rules, "unstaffed")


    # -- callbacks arranged on a call (gateway/voice_callback_intake.py) ------------------------------------
    def takes_callbacks(self, conversation: Conversation) -> bool:
        return self.intake.takes_callbacks(conversation)

    def callback_after_seconds(self, conversation: Conversation) -> int | None:
        return self.intake.callback_after_seconds(conversation)

    async def callback_offer(self, conversation_id: str, why: str, eta_seconds: int | None = None
                             ) -> CallbackPrompt | None:
        return await self.intake.offer(conversation_id, why, eta_seconds)

    async def callback_key(self, conversation_id: str, step: IntakeStep, digits: str | None, hold: bool
                           ) -> CallbackPrompt:
        return await self.intake.key(conversation_id, step, digits, hold)

    async def callback_booked(self, customer_id: str, channel: str) -> BookedCallback | None:
        return await self.intake.booked(customer_id, channel)

    async def callback_cancel(self, conversation_id: str, channel: str) -> str:
        return await self.intake.cancel(conversation_id, channel)

    # -- callbacks -----------------------------------------------------------------------------------------
    async def callback_brief(self, conversation_id: str) -> list[str]:
        brief = await self.brief(conversation_id)
        try:
            conversation = await self.app[appkeys.STORE].get(conversation_id)
        except ConversationNotFound:
            return brief
        request = conversation.callback
        if request is None:
            return brief
        rules = self.app[appkeys.RULES].rules
        known = request.queue in rules.queues.queues
        zone = rules.zone_of(rules.queue(request.queue).hours) if known else None
        asked = request.confirmed_at or request.requested_at
        at = format_time(asked, "HH:mm", tzinfo=zone, locale="en")
        tries = f" This is attempt {len(request.attempts)}." if len(request.attempts) > 1 else ""
        return [f"This is a callback the customer asked for at {at}.{tries}", *brief]

    async def callback_step(self, conversation_id: str, attempt: int, step: str, **changes: str) -> bool:
        return await self.app[appkeys.CALLBACKS].step(conversation_id, attempt, step, **changes)

    async def callback_failed(self, conversation_id: str, attempt: int, outcome: str) -> None:
        """Only the current attempt's first failure counts: a late status callback changes nothing."""
        app = self.app
        try:
            conversation = await app[appkeys.STORE].get(conversation_id)
        except ConversationNotFound:
            return
        request = conversation.callback
        current = request.current if request is not None else None
        if current is None or current.n != attempt or current.state not in ("offering", "dialling"):
            return
        if current.agent:
            await self.on_the_phone(current.agent, False)
        rules = app[appkeys.RULES].rules
        told = await app[appkeys.CALLBACKS].attempt_failed(conversation_id, outcome, rules)
        if told is not None:
            channel = app[appkeys.CHANNELS].get(told.conversation.channel)
            await channel.deliver(told.conversation, told.message)
        app[appkeys.DISPATCHER].kick()

    async def callback_greeting(self, conversation_id: str) -> str:
        app = self.app
        rules = app[appkeys.RULES].rules
        conversation = await app[appkeys.STORE].get(conversation_id)
        request = conversation.callback
        agent = await app[appkeys.AGENTS].get(conversation.agent) if conversation.agent else None
        queue = request.queue if request is not None else conversation.queue or ""
        handoff = conversation.handoff
        locale = (handoff.language if handoff else None) or rules.meta.default_locale
        text, _ = messages.render(rules, "callback_greeting", locale, "voice", now=utcnow(), extra={
            "agent": agent.name if agent else "",
            "queue": rules.queue(queue).name if queue in rules.queues.queues else queue})
        return text


def _words(code: str) -> str:
    """A code as words for the ear: billing_dispute -> billing dispute."""
    return code.replace("_", " ")


def _clip(text: str, words: int = 25) -> str:
    """A customer's words, short enough to hear in one breath."""
    kept = text.split()
    return " ".join(kept[:words]) + (" ..." if len(kept) > words else "")
