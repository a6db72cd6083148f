"""Live queue updates for waiting customers: their place in the queue and an honest estimate of the wait.

The estimate comes from live state: the conversations ahead, the free and total capacity of the agents
online who serve the queue, and the queue's rolling average handle time. With nobody serving the queue
online there is no estimate, and the customer is told so rather than promised someone. Updates go out when
a customer's place changes noticeably, at most every RATE_LIMIT_SECONDS per conversation.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from babel.dates import format_timedelta

from handoff import messages
from handoff.agents import Agent, AgentState, Presence
from handoff.desk import Desk
from handoff.ruleset import RuleSet
from sessions.models import ConversationEvent, ConversationState
from sessions.store import ConversationNotFound, TransitionRefused, decode_text

log = structlog.get_logger(__name__)

DEFAULT_HANDLE_SECONDS = 300
RATE_LIMIT_SECONDS = 30
# Time for an offer to reach a free agent and be accepted: the wait of a customer an agent is free for.
OFFER_WAIT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Staffing:
    capacity: int
    free: int
    handle_seconds: float


def estimate_wait(position: int, staffing: Staffing) -> int | None:
    """Seconds until a person replies to the customer at ``position`` (1 = next), or None when nobody
    serving the queue is online."""
    if staffing.capacity <= 0:
        return None
    if position <= staffing.free:
        return OFFER_WAIT_SECONDS
    rounds = math.ceil((position - staffing.free) / staffing.capacity)
    return round(rounds * staffing.handle_seconds + OFFER_WAIT_SECONDS)


def expected_wait(depth: int, staffing: Staffing | None) -> float | None:
    """The wait a customer joining the queue now can expect, or None when unknown or nobody is online."""
    return None if staffing is None else estimate_wait(depth + 1, staffing)


def material(previous: int | None, position: int) -> bool:
    """A change worth a message: the first one, reaching the front, or moving up a quarter of the way."""
    if previous is None:
        return True
    if position == previous:
        return False
    if position == 1 or position > previous:
        return True
    return previous - position >= max(1, previous // 4)


# Told of each waiting customer's new expected wait (seconds), after their update was sent: where a queue
# offers callbacks once the wait is long, the gateway offers one (handoff/callbacks.py).
LongWait = Callable[[str, int], Awaitable[object]]


class QueueUpdates:
    def __init__(
        self, desk: Desk, rate_limit_seconds: float = RATE_LIMIT_SECONDS, on_wait: LongWait | None = None
    ) -> None:
        self.desk = desk
        self.on_wait = on_wait
        self.rate_limit_ms = rate_limit_seconds * 1000
        # Staffing per queue as of the last round: what the policy's overflow rule reads for expected wait.
        self.last_staffing: dict[str, Staffing] = {}

    async def staffing(
        self, rules: RuleSet, agents: list[Agent], states: dict[str, AgentState]
    ) -> dict[str, Staffing]:
        desk = self.desk
        names = [n for n, q in rules.queues.queues.items() if not q.retired]
        async with desk.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.lrange(desk.keys.handle_times(desk.desk, name), 0, -1)
            times = await pipe.execute()
        result: dict[str, Staffing] = {}
        for name, handled in zip(names, times, strict=True):
            queue = rules.queue(name)
            serving = [
                states[a.id]
                for a in agents
                if a.id in states and states[a.id].status is Presence.ONLINE and a.serves(name, queue.skills)
            ]
            average = sum(float(t) for t in handled) / len(handled) if handled else DEFAULT_HANDLE_SECONDS
            result[name] = Staffing(sum(s.capacity for s in serving), sum(s.free for s in serving), average)
        return result

    async def send_due(self, rules: RuleSet, now: datetime) -> int:
        """Tell waiting customers of live queues where they stand, when it changed noticeably."""
        desk = self.desk
        states = await desk.agents.online()
        agents = await desk.agents.all()
        staffing = await self.staffing(rules, agents, states)
        self.last_staffing = staffing
        sent_raw: dict[Any, Any] = await desk.redis.hgetall(desk.keys.sla_sent(desk.desk))
        sent = {decode_text(k): decode_text(v) for k, v in sent_raw.items()}
        count = 0
        still_waiting: set[str] = set()
        for name, figures in staffing.items():
            waiting = [cid for cid, _ in await desk.queues.waiting(name, 500)]
            still_waiting.update(waiting)
            for position, cid in enumerate(waiting, start=1):
                previous_position, previous_ms = _parse(sent.get(cid))
                if not material(previous_position, position):
                    continue
                if (
                    previous_ms is not None
                    and now.timestamp() * 1000 - previous_ms < self.rate_limit_ms
                ):
                    continue
                eta = estimate_wait(position, figures)
                if await self._send(rules, cid, position, eta, now, first=previous_position is None):
                    await desk.redis.hset(
                        desk.keys.sla_sent(desk.desk), cid, f"{position}|{int(now.timestamp() * 1000)}"
                    )
                    count += 1
                    if eta is not None and self.on_wait is not None:
                        await self.on_wait(cid, eta)
        gone = [cid for cid in sent if cid not in still_waiting]
        if gone:  # left the queue (claimed, offered, expired): start afresh if they come back
            await desk.redis.hdel(desk.keys.sla_sent(desk.desk), *gone)
        return count

    async def _send(
        self, rules: RuleSet, cid: str, position: int, eta: int | None, now: datetime, *, first: bool
    ) -> bool:
        desk = self.desk
        try:
            conversation = await desk.store.get(cid)
        except ConversationNotFound:
            return False
        if conversation.state is not ConversationState.QUEUED:
            return False
        if conversation.callback is not None and conversation.callback.state in _QUIET_CALLBACK:
            # A due callback waits for an agent to call, not to reply: its place is noted and nothing is
            # said (the customer was told when they would be called, and is told when an agent calls).
            return True
        locale = (
            conversation.handoff.language if conversation.handoff else None
        ) or rules.meta.default_locale
        key = messages.POSITION if eta is not None else messages.POSITION_UNSTAFFED
        wait = format_timedelta(timedelta(seconds=eta or 0), locale=locale, threshold=1.5) if eta else ""
        text, _ = messages.render(
            rules,
            key,
            locale,
            conversation.channel,
            now=now,
            extra={
                "position": str(position),
                "wait": wait,
                "queue": _queue_name(rules, conversation.queue),
            },
        )
        status = {
            **desk.status_of(conversation, ConversationState.QUEUED),
            "position": position,
            "eta_seconds": eta,
        }
        # "first": channels that cannot show updates quietly (SMS, WhatsApp) send only the first as a message.
        event = ConversationEvent(
            type="handoff.sla", conversation_id=cid, data={"status": status, "text": text, "first": first}
        )
        try:  # an event on the conversation, its state unchanged: refused if it stopped waiting meanwhile
            await desk.store.transition(
                cid, ConversationState.QUEUED, event, allowed_from=[ConversationState.QUEUED]
            )
        except (TransitionRefused, ConversationNotFound):
            return False
        return True


_QUIET_CALLBACK = frozenset({"offering", "dialling"})


def _parse(raw: str | None) -> tuple[int | None, float | None]:
    if not raw:
        return None, None
    position, _, ms = raw.partition("|")
    return int(position), float(ms)


def _queue_name(rules: RuleSet, queue: str | None) -> str:
    found = rules.queues.queues.get(queue or "")
    return found.name if found else (queue or "")
