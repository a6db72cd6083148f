"""Desk steps that phone calls need beyond claim, transfer and resolve: a warm transfer that hands the
conversation from agent to agent (one holder throughout), a caller who hangs up while waiting (abandoned,
with the wait), and a call nobody can take now turned into a follow-up instead of a hold.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import structlog
from redis.commands.core import AsyncScript

from handoff.agents import Agent
from handoff.desk import Desk, DeskError, _ms, _script
from handoff.offers import Dispatcher
from handoff.ruleset import RuleSet
from sessions.models import ConversationEvent, ConversationState, utcnow
from sessions.store import ConversationNotFound, TransitionRefused

log = structlog.get_logger(__name__)


class CallDesk:
    def __init__(self, desk: Desk, dispatcher: Dispatcher) -> None:
        self.desk = desk
        self.dispatcher = dispatcher
        self._handover: AsyncScript = desk.redis.register_script(_script("handover"))

    async def begin_transfer(self, agent: Agent, conversation_id: str, target: Agent, note: str) -> None:
        """A warm transfer starts: the first agent keeps the conversation (and the caller) until the
        colleague takes over. Recorded, and the channel acts on it (holds the caller, dials the colleague)."""
        desk = self.desk
        conversation = await desk.conversation(conversation_id)
        if conversation.state is not ConversationState.ASSIGNED or conversation.agent != agent.id:
            raise DeskError(409, "not_assigned", "Claim the conversation first.")
        if target.id == agent.id:
            raise DeskError(422, "transfer_to_self", "Pick a colleague, not yourself.")
        note_entry = {"kind": "transfer", "from_agent": agent.name, "to_agent": target.name, "note": note,
                      "at": utcnow().isoformat()}
        event = ConversationEvent(type="handoff.transferring", conversation_id=conversation_id, data={
            "from_agent": agent.id, "to_agent": target.id, "to_agent_name": target.name, "note": note})
        try:
            await desk.store.transition(conversation_id, ConversationState.ASSIGNED, event,
                                        updates={"notes": [*conversation.notes, note_entry]},
                                        allowed_from=[ConversationState.ASSIGNED])
        except TransitionRefused:
            raise DeskError(409, "not_assigned", "The conversation is no longer assigned to you.") from None

    async def handover(self, conversation_id: str, from_agent: str, to_agent: str) -> bool:
        """The colleague took over: one desk step moves the hold, then the conversation's own step."""
        desk, keys, tag = self.desk, self.desk.keys, self.desk.desk
        moved = await self._handover(
            keys=[keys.assignments(tag),
                  keys.agent_state(tag, from_agent), keys.agent_conversations(tag, from_agent),
                  keys.agent_state(tag, to_agent), keys.agent_conversations(tag, to_agent)],
            args=[conversation_id, from_agent, to_agent, _ms(utcnow())],
        )
        if not moved:
            return False
        target = await desk.agents.get(to_agent)
        conversation = await desk.conversation(conversation_id)
        status = {**desk.status_of(conversation, ConversationState.ASSIGNED),
                  "agent_name": target.name if target else to_agent}
        event = ConversationEvent(type="handoff.assigned", conversation_id=conversation_id, data={
            "status": status, "agent_id": to_agent, "from_agent": from_agent, "via": "transfer"})
        with contextlib.suppress(TransitionRefused, ConversationNotFound):
            await desk.store.transition(conversation_id, ConversationState.ASSIGNED, event,
                                        updates={"agent": to_agent, "assigned_at": utcnow()},
                                        allowed_from=[ConversationState.ASSIGNED])
        await desk.notify_agent(from_agent, "desk.released", conversation_id, {"reason": "transfer"})
        await desk.notify_agent(to_agent, "desk.assigned", conversation_id, {"queue": conversation.queue})
        log.info("desk.handed_over", conversation_id=conversation_id, to_agent=to_agent)
        return True

    async def transfer_failed(
        self, conversation_id: str, from_agent: str, to_agent: str, reason: str
    ) -> None:
        """The colleague did not take it: recorded, and the first agent's console is told."""
        event = ConversationEvent(type="handoff.transfer_failed", conversation_id=conversation_id,
                                  data={"from_agent": from_agent, "to_agent": to_agent, "reason": reason})
        await self.desk.store.record(conversation_id, event)
        await self.desk.notify_agent(from_agent, "desk.transfer_failed", conversation_id,
                                     {"to_agent": to_agent, "reason": reason})

    async def abandon(self, conversation_id: str, now: datetime) -> bool:
        """The customer left while waiting: out of the queue (an offer to an agent lapses first), then
        recorded as abandoned with how long they waited. False when it was not waiting."""
        desk = self.desk
        try:
            conversation = await desk.store.get(conversation_id)
        except ConversationNotFound:
            return False
        if conversation.state not in (ConversationState.QUEUED, ConversationState.OFFERED):
            return False
        callback = conversation.callback
        if callback is not None and callback.state in ("scheduled", "offering", "dialling"):
            # Waiting for the callback they were promised, not for this call: hanging up leaves nothing.
            return False
        if conversation.state is ConversationState.OFFERED:
            await self.dispatcher.lapse(conversation_id, passed_over=False)
        if conversation.queue:
            await desk.queues.remove(conversation.queue, conversation_id)
        since = conversation.handoff.decided_at if conversation.handoff else conversation.updated_at
        waited = round((now - since).total_seconds())
        event = ConversationEvent(type="handoff.abandoned", conversation_id=conversation_id, data={
            "status": desk.status_of(conversation, ConversationState.ABANDONED), "wait_seconds": waited})
        try:
            await desk.store.transition(conversation_id, ConversationState.ABANDONED, event,
                                        allowed_from=[ConversationState.QUEUED, ConversationState.OFFERED])
        except (TransitionRefused, ConversationNotFound):
            return False
        log.info("desk.abandoned", conversation_id=conversation_id, wait_seconds=waited)
        return True

    async def follow_up(self, conversation_id: str, rules: RuleSet) -> bool:
        """Nobody can take it live: from the live queue to the queue's follow-ups (someone calls back)."""
        desk = self.desk
        try:
            conversation = await desk.store.get(conversation_id)
        except ConversationNotFound:
            return False
        if conversation.state is not ConversationState.QUEUED or not conversation.queue:
            return False
        queue = conversation.queue
        priority = conversation.priority
        since = conversation.handoff.decided_at if conversation.handoff else utcnow()
        await desk.queues.enqueue(queue, conversation_id, priority, since, live=False)
        event = ConversationEvent(type="handoff.async", conversation_id=conversation_id, data={
            "status": {**desk.status_of(conversation, ConversationState.ASYNC), "mode": "callback"},
            "reason": "nobody online to take the call"})
        try:
            await desk.store.transition(conversation_id, ConversationState.ASYNC, event,
                                        allowed_from=[ConversationState.QUEUED])
        except (TransitionRefused, ConversationNotFound):
            await desk.queues.remove(queue, conversation_id, live=False)
            return False
        await desk.queues.remove(queue, conversation_id)
        return True

