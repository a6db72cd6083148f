"""Offers: the desk hands each waiting conversation to the best eligible agent, who has a while to accept.

Best means: has the queue's skills, speaks the customer's language when anyone online does, most free
capacity, then longest idle, and not someone who already let this conversation pass. An offer reserves a
slot of the agent's capacity; one that lapses (the deadline passes, or the agent declines or leaves) puts
the conversation back in its place in the queue and it is offered to the next agent. Deadlines are a sorted
set popped with a lease (pop_due.lua), so they survive restarts and fire once across instances.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from redis.commands.core import AsyncScript

from handoff.agents import Agent, AgentState, Presence
from handoff.desk import Desk, DeskError, _ms, _script, callback_attempt
from handoff.ruleset import RuleSet
from sessions.jobs import POP_DUE
from sessions.models import Conversation, ConversationEvent, ConversationState, utcnow
from sessions.store import ConversationNotFound, TransitionRefused, decode_text

log = structlog.get_logger(__name__)

PASSED_OVER_TTL_SECONDS = 3600
STRAY_GRACE_SECONDS = 60
_LEASE_MS = 30_000
_HEAD = 20  # conversations looked at per queue and round


@dataclass(frozen=True, slots=True)
class Offer:
    conversation_id: str
    agent_id: str


def best_agent(
    conversation: Conversation, candidates: list[Agent], states: dict[str, AgentState], passed: set[str]
) -> Agent | None:
    queue = conversation.queue or ""
    skills = conversation.handoff.skills if conversation.handoff else []
    able = [a for a in candidates if a.id not in passed and states[a.id].free > 0 and a.serves(queue, skills)]
    language = conversation.handoff.language if conversation.handoff else None
    speakers = [a for a in able if language and language in a.languages]
    pool = speakers or able
    if not pool:
        return None
    # A customer who came back soon after a resolve goes to the agent who helped them, when free.
    returning = next((a for a in pool if a.id == conversation.last_agent), None)
    if returning is not None:
        return returning
    return max(pool, key=lambda a: (states[a.id].free, -states[a.id].idle_since))


class Dispatcher:
    def __init__(self, desk: Desk, offer_seconds: float) -> None:
        self.desk = desk
        self.offer_seconds = offer_seconds
        self._offer: AsyncScript = desk.redis.register_script(_script("offer"))
        self._lapse: AsyncScript = desk.redis.register_script(_script("lapse"))
        self._pop_due: AsyncScript = desk.redis.register_script(POP_DUE)
        self._lock = asyncio.Lock()
        self._kicked = asyncio.Event()
        # Agents online per queue as of the last round; what the policy reads for "nobody is online".
        self.online_by_queue: dict[str, int] = {}

    def kick(self) -> None:
        """Ask for a dispatch round soon (a handoff, a free slot, an agent online); calls coalesce."""
        self._kicked.set()

    async def wait_for_kick(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that races the event.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._kicked.wait()
        self._kicked.clear()

    async def dispatch(self, rules: RuleSet, now: datetime) -> list[Offer]:
        """Offer waiting conversations to free agents; call it whenever either side changes."""
        async with self._lock:
            return await self._dispatch(rules, now)

    async def _dispatch(self, rules: RuleSet, now: datetime) -> list[Offer]:
        desk = self.desk
        states = {i: s for i, s in (await desk.agents.online()).items() if s.status is Presence.ONLINE}
        agents = [a for a in await desk.agents.all() if a.id in states]
        self.online_by_queue = {
            name: sum(1 for a in agents if a.serves(name, queue.skills))
            for name, queue in rules.queues.queues.items()
        }
        if not any(s.free for s in states.values()):
            return []
        made: list[Offer] = []
        for name, queue in rules.queues.queues.items():
            if queue.retired or not rules.is_open(queue.hours, now):
                continue
            entries = await desk.queues.waiting(name, _HEAD)
            if not entries:
                continue
            conversations = await desk.store.get_many([cid for cid, _ in entries])
            await self._drop_strays(name, entries, conversations)
            async with desk.redis.pipeline(transaction=False) as pipe:
                for conversation in conversations:
                    pipe.smembers(desk.keys.passed_over(desk.desk, conversation.id))
                passed_sets = await pipe.execute()
            for conversation, passed in zip(conversations, passed_sets, strict=True):
                if conversation.state is not ConversationState.QUEUED:
                    continue
                agent = best_agent(conversation, agents, states, {decode_text(p) for p in passed})
                if agent is None:
                    continue
                if await self._make_offer(conversation, agent, name, now):
                    made.append(Offer(conversation.id, agent.id))
                    states[agent.id] = states[agent.id].model_copy(
                        update={"active": states[agent.id].active + 1}
                    )
        return made

    async def _drop_strays(
        self, queue: str, entries: list[tuple[str, datetime]], conversations: list[Conversation]
    ) -> None:
        """Queue entries whose conversation expired, or never left the bot (its instance died between
        queueing and handing off), are removed once they are older than any handoff in progress."""
        found = {c.id: c for c in conversations}
        cutoff = utcnow() - timedelta(seconds=STRAY_GRACE_SECONDS)
        for cid, since in entries:
            conversation = found.get(cid)
            # Only a conversation that is gone or never left the bot: a transfer or hand-back in progress
            # (still ASSIGNED for a moment) is not a stray.
            stray = conversation is None or conversation.state in (
                ConversationState.BOT, ConversationState.RESOLVED, ConversationState.ABANDONED
            )
            if stray and since < cutoff:
                await self.desk.queues.remove(queue, cid)
                log.info("desk.stray_removed", conversation_id=cid, queue=queue)

    async def _make_offer(self, conversation: Conversation, agent: Agent, queue: str, now: datetime) -> bool:
        desk = self.desk
        # Deadlines run on the real clock; ``now`` (the business clock) only decides which queues are open.
        deadline = utcnow() + timedelta(seconds=self.offer_seconds)
        result = await self._offer(
            keys=[
                desk.keys.queue(desk.desk, queue),
                desk.keys.offers(desk.desk),
                desk.keys.offer_deadlines(desk.desk),
                desk.keys.agent_state(desk.desk, agent.id),
                desk.keys.assignments(desk.desk),
            ],
            args=[conversation.id, agent.id, _ms(deadline), queue],
        )
        if int(result) != 1:
            return False
        status = {**desk.status_of(conversation, ConversationState.OFFERED), "agent_name": agent.name}
        event = ConversationEvent(
            type="handoff.offered",
            conversation_id=conversation.id,
            data={"status": status, "agent_id": agent.id, "deadline": deadline.isoformat(),
                  **callback_attempt(conversation)},
        )
        try:
            await desk.store.transition(
                conversation.id, ConversationState.OFFERED, event, allowed_from=[ConversationState.QUEUED]
            )
        except (TransitionRefused, ConversationNotFound):
            await self.lapse(conversation.id, rules_agent=agent.id, passed_over=False)
            return False
        await desk.notify_agent(
            agent.id, "desk.offered", conversation.id, {"deadline": deadline.isoformat(), "queue": queue}
        )
        log.info("desk.offered", conversation_id=conversation.id, agent_id=agent.id, queue=queue)
        return True

    async def lapse(
        self, conversation_id: str, rules_agent: str | None = None, passed_over: bool = True
    ) -> bool:
        """End an offer unaccepted; the conversation goes back to its place in its queue."""
        desk = self.desk
        raw = await desk.redis.hget(desk.keys.offers(desk.desk), conversation_id)
        if raw is None:
            return False
        offer = decode_text(raw)
        agent_id, _, queue = offer.split("|", 2)
        if rules_agent is not None and agent_id != rules_agent:
            return False
        passed_key = desk.keys.passed_over(desk.desk, conversation_id)
        lapsed = await self._lapse(
            keys=[
                desk.keys.offers(desk.desk),
                desk.keys.offer_deadlines(desk.desk),
                desk.keys.agent_state(desk.desk, agent_id),
                desk.keys.queue(desk.desk, queue),
                passed_key if passed_over else desk.keys.passed_over(desk.desk, "-"),
            ],
            args=[conversation_id, offer, PASSED_OVER_TTL_SECONDS],
        )
        if not lapsed:
            return False
        try:
            conversation = await desk.store.get(conversation_id)
            event = ConversationEvent(
                type="handoff.queued",
                conversation_id=conversation_id,
                data={
                    "status": desk.status_of(conversation, ConversationState.QUEUED),
                    "offer_lapsed_for": agent_id,
                    **callback_attempt(conversation),
                },
            )
            await desk.store.transition(
                conversation_id, ConversationState.QUEUED, event, allowed_from=[ConversationState.OFFERED]
            )
        except (TransitionRefused, ConversationNotFound):
            pass
        await desk.notify_agent(agent_id, "desk.offer_withdrawn", conversation_id, {})
        log.info("desk.offer_lapsed", conversation_id=conversation_id, agent_id=agent_id)
        return True

    async def extend(self, conversation_id: str, agent_id: str, until: datetime) -> bool:
        """Push an offer's deadline to ``until`` while it is still this agent's (XX: a lapsed or accepted
        offer, whose deadline is gone, is not brought back)."""
        desk = self.desk
        raw = await desk.redis.hget(desk.keys.offers(desk.desk), conversation_id)
        if raw is None or not decode_text(raw).startswith(f"{agent_id}|"):
            return False
        changed = await desk.redis.zadd(desk.keys.offer_deadlines(desk.desk), {conversation_id: _ms(until)},
                                        xx=True, ch=True)
        return bool(changed)

    async def decline(self, agent: Agent, conversation_id: str) -> None:
        if not await self.lapse(conversation_id, rules_agent=agent.id):
            raise DeskError(409, "no_offer", "There is no offer of this conversation to you.")

    async def expire_offers(self, now: datetime) -> int:
        """Lapse every offer whose deadline passed (each handled by exactly one sweeper)."""
        desk = self.desk
        due = await self._pop_due(
            keys=[desk.keys.offer_deadlines(desk.desk)], args=[_ms(now), _LEASE_MS, 100]
        )
        count = 0
        for member in due:
            if await self.lapse(decode_text(member)):
                count += 1
            else:  # accepted meanwhile, or the offer is gone: drop the stale timer
                await desk.redis.zrem(desk.keys.offer_deadlines(desk.desk), member)
        return count

    async def withdraw_offers_to(self, agent_id: str) -> None:
        """An agent leaving loses the offers made to them."""
        desk = self.desk
        offers: dict[Any, Any] = await desk.redis.hgetall(desk.keys.offers(desk.desk))
        for cid, value in offers.items():
            if decode_text(value).startswith(f"{agent_id}|"):
                await self.lapse(decode_text(cid), rules_agent=agent_id)
