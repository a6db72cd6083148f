"""The agent desk: claiming, answering, transferring and resolving handed-off conversations.

Who holds a conversation is decided on the desk's hash tag by one Lua script (claim.lua), so however many
agents and instances race for it, exactly one wins; the conversation's own state then follows in a second,
conversation-tag step (no script spans two tags). If that second step is refused, the desk step is undone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from handoff import messages
from handoff.agents import Agent, AgentStore, Presence
from handoff.callback_texts import shown_number
from handoff.queues import QueueStore, queue_score, waiting_since
from handoff.ruleset import RuleSet
from sessions.keys import Keys
from sessions.models import (
    Conversation,
    ConversationEvent,
    ConversationState,
    Direction,
    Message,
    PolicySignals,
    SenderKind,
    utcnow,
)
from sessions.store import (
    AppendResult,
    ConversationNotFound,
    ConversationStore,
    TransitionRefused,
    conversation_from_hash,
    message_from_entry,
)

log = structlog.get_logger(__name__)

HANDLE_TIMES_KEPT = 50
WAITING = (ConversationState.QUEUED, ConversationState.OFFERED, ConversationState.ASYNC)


def callback_attempt(conversation: Conversation) -> dict[str, Any]:
    """A due callback offered to or taken by an agent: the attempt the channel that places calls rings the
    agent for (on an offer, when they have a phone) and dials (agent first, once taken)."""
    callback = conversation.callback
    if callback is None or callback.state != "offering" or callback.current is None:
        return {}
    return {"callback_attempt": callback.current.n}


def _waited(score: Any) -> dict[str, Any]:
    """How long the customer waited for this agent, from their queue entry's score (what the queue's oldest
    wait is read from too): the time-to-agent figure that ``GET /metrics`` reports."""
    try:
        since = waiting_since(float(score))
    except (TypeError, ValueError):
        return {}
    return {"waited_seconds": round(max(0.0, (utcnow() - since).total_seconds()), 3)}


class DeskError(Exception):
    """A request the desk refuses, with the HTTP status and machine-readable code the API answers."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _script(name: str) -> str:
    return (files("handoff") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A desk step's result: the conversation after it and the notice the customer was sent."""

    conversation: Conversation
    notice: Message | None


class Desk:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        store: ConversationStore,
        agents: AgentStore,
        queues: QueueStore,
        desk: str = "main",
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.store = store
        self.agents = agents
        self.queues = queues
        self.desk = desk
        self._claim: AsyncScript = redis.register_script(_script("claim"))
        self._release: AsyncScript = redis.register_script(_script("release"))

    async def conversation(self, conversation_id: str) -> Conversation:
        try:
            return await self.store.get(conversation_id)
        except ConversationNotFound:
            raise DeskError(404, "conversation_not_found", f"No conversation {conversation_id}.") from None

    async def follow_view(
        self, conversation_id: str, after: str | None
    ) -> tuple[Conversation, list[Message], str | None]:
        """What a live follower needs to start or catch up, in one round trip: the conversation (to check
        access), the messages after ``after`` (none without it) and the newest message id (where "now" is)."""
        transcript = self.keys.transcript(conversation_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.conversation(conversation_id))
            if after:
                pipe.xrange(transcript, min=f"({after}", max="+")
            else:
                pipe.xrevrange(transcript, count=1)
            raw, entries = await pipe.execute()
        if not raw:
            raise DeskError(404, "conversation_not_found", f"No conversation {conversation_id}.")
        messages = [message_from_entry(i, f[b"m"]) for i, f in entries]
        newest = messages[-1].id if messages else after
        return conversation_from_hash(raw), messages if after else [], newest

    def check_access(self, agent: Agent, conversation: Conversation) -> None:
        """An agent sees conversations waiting in queues they serve, their own, and ones they resolved;
        nothing else (not a conversation still with the bot, not another agent's)."""
        if conversation.agent == agent.id or (
            conversation.state is ConversationState.RESOLVED and conversation.last_agent == agent.id
        ):
            return
        if (
            conversation.agent
            and conversation.agent != agent.id
            and conversation.state is ConversationState.ASSIGNED
        ):
            raise DeskError(403, "another_agents_conversation", "Another agent holds this conversation.")
        if conversation.state in WAITING and conversation.queue and not self._serves(agent, conversation):
            raise DeskError(403, "not_your_queue", f"You do not serve the queue {conversation.queue}.")
        if conversation.state not in WAITING:
            raise DeskError(403, "not_handed_off", "Only conversations handed to the desk can be opened.")

    def _serves(self, agent: Agent, conversation: Conversation) -> bool:
        skills = conversation.handoff.skills if conversation.handoff else []
        return agent.serves(conversation.queue or "", skills)

    # -- claim -------------------------------------------------------------------------------------------
    async def claim(
        self, agent: Agent, conversation_id: str, rules: RuleSet, *, via: str = "console"
    ) -> Outcome:
        """``via`` says how the agent took it (``console``, or ``phone`` for a key press on a call), so the
        customer's channel knows whether the agent still has to be brought to the customer."""
        conversation = await self.conversation(conversation_id)
        if conversation.state is ConversationState.ASSIGNED:
            if conversation.agent == agent.id:
                return Outcome(conversation, None)
            raise DeskError(409, "claimed_by_another", "Another agent took this conversation first.")
        if conversation.state not in WAITING or not conversation.queue:
            raise DeskError(
                409, "not_waiting", f"The conversation is {conversation.state.value}, not waiting."
            )
        self.check_access(agent, conversation)
        live = conversation.state is not ConversationState.ASYNC
        queue_key = (
            self.keys.queue(self.desk, conversation.queue)
            if live
            else self.keys.backlog(self.desk, conversation.queue)
        )
        code, _, *score = await self._claim(
            keys=[
                self.keys.assignments(self.desk),
                queue_key,
                self.keys.agent_state(self.desk, agent.id),
                self.keys.agent_conversations(self.desk, agent.id),
                self.keys.offers(self.desk),
                self.keys.offer_deadlines(self.desk),
            ],
            args=[conversation.id, agent.id],
        )
        code = int(code)
        if code == 0:
            raise DeskError(409, "claimed_by_another", "Another agent took this conversation first.")
        if code == -1:
            raise DeskError(409, "not_waiting", "The conversation is no longer waiting in its queue.")
        if code == -2:
            raise DeskError(409, "not_online", "Set your presence to online before taking conversations.")
        if code == -3:
            raise DeskError(409, "at_capacity", "You are at your capacity; resolve or transfer one first.")
        if code == -4:
            raise DeskError(409, "offered_to_another", "The conversation is being offered to another agent.")
        notice = self._joined(rules, conversation, agent)
        status = self._status(conversation, ConversationState.ASSIGNED, agent)
        try:
            stored = await self.store.append_and_move(
                notice,
                ConversationState.ASSIGNED,
                [self._event(conversation, "handoff.assigned", status, notice, agent_id=agent.id, via=via,
                             **_waited(score[0] if score else None), **callback_attempt(conversation))],
                updates={"agent": agent.id, "assigned_at": utcnow()},
                allowed_from=WAITING,
            )
        except TransitionRefused:
            await self._release_desk(agent.id, conversation.id, requeue=None)
            raise DeskError(
                409, "not_waiting", "The conversation stopped waiting while you claimed it."
            ) from None
        if await self.redis.hget(self.keys.assignments(self.desk), conversation.id) != agent.id.encode():
            # Handed back while this claim was finishing (the agent's heartbeat ran out): undo the state step.
            event = ConversationEvent(
                type="handoff.requeued",
                conversation_id=conversation.id,
                data={"status": self._status(conversation, ConversationState.QUEUED, None)},
            )
            with contextlib.suppress(TransitionRefused, ConversationNotFound):
                await self.store.transition(
                    conversation.id,
                    ConversationState.QUEUED,
                    event,
                    updates={"agent": ""},
                    allowed_from=[ConversationState.ASSIGNED],
                )
            raise DeskError(
                409, "not_waiting", "The conversation went back to its queue while you claimed it."
            )
        await self.notify_agent(agent.id, "desk.assigned", conversation.id, {"queue": conversation.queue})
        return Outcome(stored.conversation, stored.message)

    # -- talk --------------------------------------------------------------------------------------------
    async def say(self, agent: Agent, conversation_id: str, text: str) -> AppendResult:
        conversation = await self._held(agent, conversation_id)
        message = Message(
            conversation_id=conversation.id,
            direction=Direction.OUTBOUND,
            sender=SenderKind.AGENT,
            text=text,
            channel=conversation.channel,
            channel_metadata={"agent_id": agent.id, "agent_name": agent.name},
        )
        try:
            return await self.store.append_and_move(
                message, ConversationState.ASSIGNED, [], allowed_from=[ConversationState.ASSIGNED]
            )
        except TransitionRefused:
            raise DeskError(409, "not_assigned", "The conversation is no longer assigned to you.") from None

    # -- transfer ----------------------------------------------------------------------------------------
    async def transfer(
        self, agent: Agent, conversation_id: str, queue: str, note: str, rules: RuleSet
    ) -> Outcome:
        """Warm transfer: back into a queue (ahead of newer conversations of its priority), with the note."""
        target = rules.queues.queues.get(queue)
        if target is None or target.retired:
            raise DeskError(422, "unknown_queue", f"There is no open queue named {queue!r}.")
        conversation = await self._held(agent, conversation_id)
        priority = conversation.priority
        since = conversation.handoff.decided_at if conversation.handoff else utcnow()
        note_entry = {
            "kind": "transfer",
            "from_agent": agent.name,
            "to_queue": queue,
            "note": note,
            "at": utcnow().isoformat(),
        }
        notice = self._notice(rules, conversation, "transferred", queue=target.name)
        # The conversation now needs what the new queue needs, whatever the first routing asked for.
        handoff = (
            conversation.handoff.model_copy(
                update={"queue": queue, "queue_name": target.name, "skills": list(target.skills)}
            )
            if conversation.handoff
            else None
        )
        moved = conversation.model_copy(update={"queue": queue, "handoff": handoff})
        status = self._status(moved, ConversationState.QUEUED, None, queue_name=target.name)
        if not await self._release_desk(
            agent.id, conversation.id, requeue=(queue, queue_score(priority, since))
        ) and not await self._finishing(conversation.id):
            raise DeskError(409, "not_assigned", "The conversation is no longer assigned to you.")
        stored = await self._move(
            notice,
            ConversationState.QUEUED,
            [
                self._event(
                    conversation,
                    "handoff.transferred",
                    status,
                    notice,
                    agent_id=agent.id,
                    note=note,
                    to_queue=queue,
                ),
            ],
            {"queue": queue, "agent": "", "handoff": handoff, "notes": [*conversation.notes, note_entry]},
        )
        await self.notify_agent(agent.id, "desk.released", conversation.id, {"reason": "transfer"})
        return Outcome(stored.conversation, stored.message)

    # -- resolve -----------------------------------------------------------------------------------------
    async def resolve(
        self,
        agent: Agent,
        conversation_id: str,
        outcome: str,
        back_to_bot: bool,
        rules: RuleSet,
        *,
        context_sufficient: bool | None = None,
    ) -> Outcome:
        conversation = await self._held(agent, conversation_id)
        if not await self._release_desk(
            agent.id, conversation.id, requeue=None
        ) and not await self._finishing(conversation.id):
            raise DeskError(409, "not_assigned", "The conversation is no longer assigned to you.")
        to = ConversationState.BOT if back_to_bot else ConversationState.RESOLVED
        notice = self._notice(
            rules, conversation, "back_to_bot" if back_to_bot else "resolved", agent=agent.name
        )
        status = {**self._status(conversation, ConversationState.RESOLVED, agent), "back_to_bot": back_to_bot}
        decided = conversation.handoff.decided_at if conversation.handoff else conversation.updated_at
        stored = await self._move(
            notice,
            to,
            [
                self._event(
                    conversation,
                    "handoff.resolved",
                    status,
                    notice,
                    agent_id=agent.id,
                    outcome=outcome,
                    back_to_bot=back_to_bot,
                    context_sufficient=context_sufficient,
                    seconds_since_handoff=round((utcnow() - decided).total_seconds()),
                ),
            ],
            {
                "agent": "",
                "last_agent": agent.id,
                "resolved_at": utcnow(),
                "signals": PolicySignals(language=conversation.signals.language),
            },
        )
        if conversation.assigned_at is not None and conversation.queue:
            handled = round((utcnow() - conversation.assigned_at).total_seconds())
            key = self.keys.handle_times(self.desk, conversation.queue)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(key, handled)
                pipe.ltrim(key, 0, HANDLE_TIMES_KEPT - 1)
                await pipe.execute()
        await self.notify_agent(agent.id, "desk.released", conversation.id, {"reason": outcome})
        return Outcome(stored.conversation, stored.message)

    # -- presence ----------------------------------------------------------------------------------------
    async def hand_back(self, agent_id: str, reason: str, rules: RuleSet) -> list[str]:
        """An agent left (offline, or their heartbeat ran out): their conversations go back to the head of
        their queues, with a note, and the customers are told."""
        raw = await self.redis.smembers(self.keys.agent_conversations(self.desk, agent_id))
        returned: list[str] = []
        for cid in sorted(c.decode() if isinstance(c, bytes) else str(c) for c in raw):
            if await self.hand_back_one(agent_id, cid, reason, rules) is not None:
                returned.append(cid)
        return returned

    async def hand_back_one(self, agent_id: str, cid: str, reason: str, rules: RuleSet) -> str | None:
        """One conversation back to the head of its queue (its agent hung up, went offline or vanished).
        Returns what the customer was told, or None when the agent did not hold it."""
        agent = await self.agents.get(agent_id)
        name = agent.name if agent else agent_id
        try:
            conversation = await self.store.get(cid)
        except ConversationNotFound:
            await self._release_desk(agent_id, cid, requeue=None)
            return None
        queue = conversation.queue or ""
        if queue not in rules.queues.queues:  # the rules changed since: the fallback queue takes it
            queue = rules.routing.fallback.queue
        since = conversation.handoff.decided_at if conversation.handoff else utcnow()
        head = f"head:{queue_score(conversation.priority, since)}"
        if not await self._release_desk(agent_id, cid, requeue=(queue, head)):
            return None
        note = {"kind": "hand_back", "from_agent": name, "note": reason, "at": utcnow().isoformat()}
        notice = self._notice(rules, conversation, "agent_left")
        status = self._status(conversation, ConversationState.QUEUED, None)
        event = self._event(conversation, "handoff.requeued", status, notice, agent_id=agent_id, note=reason)
        try:
            await self._move(
                notice,
                ConversationState.QUEUED,
                [event],
                {"agent": "", "queue": queue, "notes": [*conversation.notes, note]},
            )
        except DeskError as exc:
            # Not assigned after all (a claim still finishing, or gone): the claim checks its hold.
            log.warning("desk.hand_back_skipped", conversation_id=cid, error=exc.code)
        await self.notify_agent(agent_id, "desk.released", cid, {"reason": "hand_back"})
        return notice.text

    async def go_offline_if_expired(self, now: datetime, rules: RuleSet) -> list[str]:
        """Agents whose heartbeat ran out are set offline and hand back their conversations."""
        gone = await self.agents.expired(now)
        for agent_id in gone:
            # Conversations first: if this fails, the agent is still expired and the next sweep retries.
            await self.hand_back(agent_id, "the agent's connection was lost", rules)
            await self.agents.set_presence(agent_id, Presence.OFFLINE, None, now)
        return gone

    # -- helpers -----------------------------------------------------------------------------------------
    async def _held(self, agent: Agent, conversation_id: str) -> Conversation:
        conversation = await self.conversation(conversation_id)
        if conversation.state is not ConversationState.ASSIGNED or conversation.agent != agent.id:
            if conversation.state is ConversationState.ASSIGNED:
                raise DeskError(403, "another_agents_conversation", "Another agent holds this conversation.")
            raise DeskError(409, "not_assigned", "Claim the conversation first.")
        return conversation

    async def _finishing(self, conversation_id: str) -> bool:
        """Nobody holds it on the desk while its state still names this agent: an earlier attempt released
        it and then failed before the state step, so this one may finish the job."""
        return await self.redis.hget(self.keys.assignments(self.desk), conversation_id) is None

    async def _release_desk(
        self, agent_id: str, conversation_id: str, requeue: tuple[str, Any] | None
    ) -> bool:
        queue_key = self.keys.queue(self.desk, requeue[0]) if requeue else self.keys.assignments(self.desk)
        released = await self._release(
            keys=[
                self.keys.assignments(self.desk),
                self.keys.agent_state(self.desk, agent_id),
                self.keys.agent_conversations(self.desk, agent_id),
                queue_key,
            ],
            args=[conversation_id, agent_id, _ms(utcnow()), "" if requeue is None else requeue[1]],
        )
        return bool(released)

    async def _move(
        self, notice: Message, to: ConversationState, events: list[ConversationEvent], updates: dict[str, Any]
    ) -> AppendResult:
        """The conversation's own state step after a desk step; refused means it changed meanwhile."""
        try:
            return await self.store.append_and_move(
                notice, to, events, updates=updates, allowed_from=[ConversationState.ASSIGNED]
            )
        except TransitionRefused as exc:
            raise DeskError(409, "not_assigned", f"The conversation is {exc.current} now.") from None
        except ConversationNotFound:
            raise DeskError(404, "conversation_not_found", "The conversation has expired.") from None

    def _joined(self, rules: RuleSet, conversation: Conversation, agent: Agent) -> Message:
        """What the customer is told when an agent takes their conversation: for a callback, that the
        agent is about to call them (the phone rings next, not the chat)."""
        callback = conversation.callback
        if callback_attempt(conversation) and callback is not None and callback.number:
            return self._notice(rules, conversation, "callback_calling", agent=agent.name,
                                number=shown_number(callback.number))
        return self._notice(rules, conversation, "agent_joined", agent=agent.name)

    def _notice(self, rules: RuleSet, conversation: Conversation, key: str, **values: str) -> Message:
        locale = (
            conversation.handoff.language if conversation.handoff else None
        ) or rules.meta.default_locale
        text, _ = messages.render(rules, key, locale, conversation.channel, now=utcnow(), extra=values)
        return Message.notice(conversation, text)

    def status_of(self, conversation: Conversation, state: ConversationState) -> dict[str, Any]:
        return self._status(conversation, state, None)

    async def notify_agent(
        self, agent_id: str, kind: str, conversation_id: str, data: dict[str, Any]
    ) -> None:
        """Tell the agent's open consoles; the desk state stays the record (consoles re-read it)."""
        event = ConversationEvent(type=kind, conversation_id=conversation_id, data=data)
        await self.redis.publish(
            self.keys.agent_inbox(self.desk, agent_id), "event\n" + event.model_dump_json()
        )

    def _status(
        self, conversation: Conversation, state: ConversationState, agent: Agent | None, queue_name: str = ""
    ) -> dict[str, Any]:
        base: dict[str, Any] = (
            conversation.handoff.status(state)
            if conversation.handoff
            else {"status": state.value, "queue": conversation.queue}
        )
        if queue_name:
            base.update(queue=conversation.queue, queue_name=queue_name)
        if agent is not None:
            base["agent_name"] = agent.name
        return base

    @staticmethod
    def _event(
        conversation: Conversation, kind: str, status: dict[str, Any], notice: Message, **data: Any
    ) -> ConversationEvent:
        return ConversationEvent(
            type=kind, conversation_id=conversation.id, data={"status": status, "text": notice.text, **data}
        )
