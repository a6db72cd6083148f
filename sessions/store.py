"""The Redis store of conversations: a state hash plus a transcript stream per conversation.

Every write is one Lua script over keys of one hash tag (one round trip, atomic, Cluster-safe); every read
that needs two keys is one pipeline. The hot steps go through a batcher, so under load the steps of many
conversations share round trips (sessions/batching.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sessions.batching import RedisBatcher
from sessions.keys import Keys
from sessions.models import (
    ALLOWED_TRANSITIONS,
    Conversation,
    ConversationEvent,
    ConversationState,
    Customer,
    Direction,
    HandoffRecord,
    Message,
    PolicySignals,
    StatusUpdate,
    utcnow,
)

log = structlog.get_logger(__name__)

# Told of every handoff step as it is stored, by the instance that stored it: the conversation's channel
# acts on it (speaks it on a call, texts it, dials an agent) exactly once.
StatusListener = Callable[[StatusUpdate], Awaitable[None]]


async def tell_safely(listener: StatusListener, update: StatusUpdate) -> None:
    """Hand a stored step to a listener. The step is already durable: a listener failing is logged, never
    raised into the desk or pipeline step that made it."""
    try:
        await listener(update)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # Redis went away between storing the step and telling the listener: an outage, not a defect. The
        # step stands; the customer misses this one notice (a wait update, say).
        log.warning("status.listener_unavailable", kind=update.kind.value,
                    conversation_id=update.conversation_id, error=type(exc).__name__)
    except Exception:
        log.exception("status.listener_failed", kind=update.kind.value,
                      conversation_id=update.conversation_id)


def fan_out(*listeners: StatusListener) -> StatusListener:
    """One listener that tells each of ``listeners`` in turn (the channel first: the customer hears of a step
    before anything else is done about it), each isolated from the others' failures."""

    async def tell(update: StatusUpdate) -> None:
        for listener in listeners:
            await tell_safely(listener, update)

    return tell

_JSON_FIELDS = ("customer", "tags", "signals", "handoff", "notes", "callback")
_JSON_FIELD_NAMES = " ".join(_JSON_FIELDS)
# A message as its stream entry holds it (the entry's id is its id). Excluded as a mapping: pydantic takes a
# set more slowly, a third of the whole dump. The JSON is the same.
_WITHOUT_ID: dict[str, bool] = {"id": True}
# How many conversations' latest state this process remembers as its own last step left it (see _Known).
KNOWN_CONVERSATIONS = 10_000
# Fields whose update values, of exactly these types, become on the conversation what reading the state hash
# back would give ("" clears the text ones, as their validator does): only steps whose updates are all of
# these are remembered, so a remembered state is the stored one, never an approximation of it.
_EXACT_UPDATES: dict[str, type] = {
    "last_inbound_at": datetime, "assigned_at": datetime, "resolved_at": datetime,
    "last_intent": str, "queue": str, "agent": str, "last_agent": str,
    "last_confidence": float, "priority": int, "signals": PolicySignals, "handoff": HandoffRecord,
}


class ConversationNotFound(LookupError):
    """The conversation never existed or has expired."""


class ConversationFull(RuntimeError):
    """The conversation already holds the most customer messages it may (MAX_MESSAGES_PER_CONVERSATION)."""

    def __init__(self, conversation_id: str, limit: int) -> None:
        super().__init__(f"conversation {conversation_id} holds {limit} messages, the most it may")
        self.limit = limit


class TransitionRefused(RuntimeError):
    def __init__(self, conversation_id: str, current: str, wanted: str) -> None:
        super().__init__(f"conversation {conversation_id} is {current}; cannot move to {wanted}")
        self.current = current
        self.wanted = wanted


@dataclass(frozen=True, slots=True)
class AppendResult:
    message: Message
    duplicate: bool
    conversation: Conversation


@dataclass(frozen=True, slots=True)
class NewConversation:
    conversation: Conversation
    resume_token: str


def _script(name: str) -> str:
    return (files("sessions") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _hash_token_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _encode_fields(values: Mapping[str, Any]) -> list[str]:
    flat: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            encoded = value.isoformat()
        elif isinstance(value, str):
            encoded = value
        elif hasattr(value, "model_dump_json"):
            encoded = value.model_dump_json()
        elif isinstance(value, list | dict):
            encoded = json.dumps(value)
        else:
            encoded = str(value)
        flat.extend((key, encoded))
    return flat


def decode_text(raw: Any) -> str:
    """A Redis reply as text, whether the client returned bytes or str."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


_decode = decode_text


def conversation_from_hash(raw: Mapping[Any, Any] | list[Any]) -> Conversation:
    """Build a Conversation from HGETALL output (a mapping, or Lua's flat field/value list)."""
    pairs = dict(zip(raw[::2], raw[1::2], strict=True)) if isinstance(raw, list) else dict(raw)
    data: dict[str, Any] = {_decode(k): _decode(v) for k, v in pairs.items()}
    for field in _JSON_FIELDS:
        if field in data:
            if data[field]:
                data[field] = json.loads(data[field])
            else:  # cleared ("" in an update): the model's default
                del data[field]
    data.pop("token_hash", None)
    return Conversation.model_validate(data)


def _exactly(updates: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``updates`` as the conversation's fields would read back from the state hash, or None when one of them
    might read back otherwise (a type this does not know to round-trip)."""
    applied: dict[str, Any] = {}
    for key, value in (updates or {}).items():
        if type(value) is not _EXACT_UPDATES.get(key):
            return None
        applied[key] = None if value == "" and type(value) is str else value
    return applied


class _Known:
    """The state each recent conversation was left in by this process's own last step on it, with the
    updated_at that step wrote. Every write to a state hash sets updated_at, so when a script finds it still
    the same, nobody changed the conversation since, and the state need not travel back nor be parsed again.
    A remembered state is exact by construction: parsed from the stored state, or a remembered one with the
    step's own changes applied after the script confirmed nothing else changed."""

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: OrderedDict[str, tuple[str, Conversation]] = OrderedDict()

    def get(self, cid: str) -> tuple[str, Conversation] | None:
        """The updated_at this process last wrote to ``cid`` and the state that write left."""
        return self._states.get(cid)

    def stamp(self, cid: str, conversation: Conversation | None) -> str:
        """The updated_at this process last wrote to ``cid`` when ``conversation`` is the very state that
        write left, else ""."""
        known = self._states.get(cid)
        return known[0] if known is not None and known[1] is conversation else ""

    def remember(self, stamp: str, conversation: Conversation) -> None:
        states = self._states
        states[conversation.id] = (stamp, conversation)
        states.move_to_end(conversation.id)
        if len(states) > KNOWN_CONVERSATIONS:
            states.popitem(last=False)

    def forget(self, cid: str) -> None:
        self._states.pop(cid, None)


def message_from_entry(entry_id: Any, payload: Any) -> Message:
    message = Message.model_validate_json(payload)
    message.id = _decode(entry_id)
    return message


class ConversationStore:
    """Conversations and transcripts in Redis. Time to live is a constructor argument, not a global.

    ``max_messages`` caps a transcript against inbound (customer) messages: past it they are refused with
    ConversationFull, inside the append script. Replies are not capped: each answers a customer message.
    """

    def __init__(
        self, redis: Redis, keys: Keys, ttl_seconds: int, *, batcher: RedisBatcher | None = None,
        max_messages: int = 0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_ms = ttl_seconds * 1000
        self.max_messages = max_messages
        self._create: AsyncScript = redis.register_script(_script("create_conversation"))
        self._append: AsyncScript = redis.register_script(_script("append_message"))
        self._transition: AsyncScript = redis.register_script(_script("transition"))
        self._append_and_move: AsyncScript = redis.register_script(_script("append_and_move"))
        self._record: AsyncScript = redis.register_script(_script("record_event"))
        # The hot steps (a message in, a reply out, a conversation opened) share pipelines under load.
        self.batcher = batcher or RedisBatcher(redis)
        self.on_status: StatusListener | None = None
        self._known = _Known()

    async def _tell(self, events: Iterable[ConversationEvent], channel: str) -> None:
        """Hand each stored handoff step to the status listener."""
        if self.on_status is None:
            return
        for event in events:
            update = StatusUpdate.from_event(event, channel)
            if update is not None:
                await tell_safely(self.on_status, update)

    # -- conversations -------------------------------------------------------------------------------
    async def create(
        self, customer: Customer, channel: str, conversation_id: str | None = None, **fields: Any
    ) -> NewConversation:
        """Open a conversation and hand back its resume token, which is shown to the client only once.

        ``conversation_id`` lets a caller claim the id first (a phone number's "open conversation" key) so
        that two requests racing to open one agree on it."""
        conversation = Conversation(id=conversation_id or uuid.uuid4().hex, channel=channel,
                                    customer=customer, **fields)
        secret = secrets.token_urlsafe(32)
        state = conversation.model_dump(mode="json", exclude_none=True)
        state["token_hash"] = _hash_token_secret(secret)
        event = ConversationEvent(type="conversation.created", conversation_id=conversation.id,
                                  data={"channel": channel, "customer_id": customer.id})
        keys = self.keys
        # Issued together, so they share one round trip.
        cid = conversation.id
        await asyncio.gather(
            self.batcher.script(self._create, [keys.conversation(cid), keys.events(cid)],
                                [self.ttl_ms, event.model_dump_json(), *_encode_fields(state)]),
            self.batcher.command("ZADD", keys.conversation_index(), conversation.created_at.timestamp(),
                                 conversation.id),
        )
        return NewConversation(conversation, f"{conversation.id}.{secret}")

    async def get(self, conversation_id: str) -> Conversation:
        raw = await self.redis.hgetall(self.keys.conversation(conversation_id))
        if not raw:
            raise ConversationNotFound(conversation_id)
        return conversation_from_hash(raw)

    async def exists(self, conversation_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.conversation(conversation_id)))

    async def get_many(self, conversation_ids: list[str]) -> list[Conversation]:
        """Several conversations in one round trip, skipping any that expired."""
        if not conversation_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in conversation_ids:
                pipe.hgetall(self.keys.conversation(cid))
            raws = await pipe.execute()
        return [conversation_from_hash(raw) for raw in raws if raw]

    async def resume(self, token: str, after: str | None = None) -> tuple[Conversation, list[Message]]:
        """The conversation a resume token is bound to, with its history (after ``after`` when given).

        One round trip: the hash and the transcript range are read in one pipeline.
        """
        conversation_id, _, secret = token.partition(".")
        if not conversation_id or not secret or not conversation_id.isalnum():
            raise ConversationNotFound("malformed token")
        keys = self.keys
        start = f"({after}" if after else "-"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.conversation(conversation_id))
            pipe.xrange(keys.transcript(conversation_id), min=start, max="+")
            raw, entries = await pipe.execute()
        stored = _decode(raw.get(b"token_hash", b"")) if raw else ""
        if not stored or not hmac.compare_digest(stored, _hash_token_secret(secret)):
            raise ConversationNotFound(conversation_id)
        return conversation_from_hash(raw), [message_from_entry(i, f[b"m"]) for i, f in entries]

    async def recent(self, limit: int = 20) -> list[str]:
        """Ids of the newest conversations, pruning index entries whose conversation has expired."""
        index = self.keys.conversation_index()
        cutoff = utcnow().timestamp() - self.ttl_ms / 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(index, "-inf", cutoff)
            pipe.zrevrange(index, 0, limit - 1)
            _, ids = await pipe.execute()
        return [_decode(i) for i in ids]

    # -- transcript ----------------------------------------------------------------------------------
    async def append(
        self,
        message: Message,
        external_id: str | None = None,
        updates: Mapping[str, Any] | None = None,
    ) -> AppendResult:
        """Append a message once per external id, updating conversation fields in the same step.

        A retried external id returns the first stored message's id with ``duplicate`` set, and writes
        nothing.
        """
        cid = message.conversation_id
        keys = self.keys
        ext_key = keys.external_id(cid, external_id) if external_id else keys.external_id(cid, "-")
        now = utcnow()
        stamp = now.isoformat()
        applied = _exactly(updates)
        # The state this process's last step here left, to start from if nobody changed it since.
        known = self._known.get(cid) if applied is not None else None
        result = await self.batcher.script(
            self._append,
            [keys.conversation(cid), keys.transcript(cid), keys.events(cid), ext_key],
            [
                self.ttl_ms,
                message.model_dump_json(exclude=_WITHOUT_ID),
                keys.live_channel(cid),
                "1" if external_id else "0",
                stamp,
                _JSON_FIELD_NAMES,
                self.max_messages if message.direction is Direction.INBOUND else 0,
                known[0] if known is not None else "",
                *_encode_fields(updates or {}),
            ],
        )
        if not result or result[0] is None:
            if result and len(result) > 1:
                raise ConversationFull(cid, self.max_messages)
            raise ConversationNotFound(cid)
        message.id = _decode(result[0])  # the caller's message, now stored under this id
        if result[1]:  # a retry: nothing written
            return AppendResult(message, True, Conversation.model_validate_json(result[2]))
        if len(result) == 2 and known is not None and applied is not None:  # unchanged since ``known``
            conversation = known[1].model_copy(update={**applied, "updated_at": now})
        else:
            conversation = Conversation.model_validate_json(result[2])
        self._known.remember(stamp, conversation)
        return AppendResult(message, False, conversation)

    async def append_and_move(
        self,
        message: Message,
        to: ConversationState,
        events: Sequence[ConversationEvent],
        updates: Mapping[str, Any] | None = None,
        allowed_from: Iterable[ConversationState] = (),
        *,
        snapshot: Conversation | None = None,
    ) -> AppendResult:
        """Append a message and change state in one atomic step (a handoff and its announcement).

        Raises TransitionRefused, writing nothing, when the conversation is no longer in ``allowed_from``
        (another instance handed it off first, say). With ``snapshot`` (the conversation as the caller last
        read it) the result is that snapshot with this step applied and Redis does not send the whole state
        back: cheaper, for callers that only need what they changed.
        """
        cid = message.conversation_id
        keys = self.keys
        now = utcnow()
        stamp = now.isoformat()
        applied = _exactly(updates) if snapshot is not None else None
        result = await self.batcher.script(
            self._append_and_move,
            [keys.conversation(cid), keys.transcript(cid), keys.events(cid)],
            [
                self.ttl_ms,
                message.model_dump_json(exclude=_WITHOUT_ID),
                keys.live_channel(cid),
                stamp,
                " ".join(s.value for s in allowed_from),
                to.value,
                len(events),
                "0" if snapshot is not None else "1",
                self._known.stamp(cid, snapshot) if applied is not None else "",
                *(e.model_dump_json() for e in events),
                *_encode_fields(updates or {}),
            ],
        )
        if not result or result[0] is None:
            raise ConversationNotFound(cid)
        if int(result[0]) == 0:
            raise TransitionRefused(cid, _decode(result[1]), to.value)
        message.id = _decode(result[1])  # the caller's message, now stored under this id
        if snapshot is not None:
            changed = {k: None if v == "" else v for k, v in (updates or {}).items()}  # "" clears a field
            conversation = snapshot.model_copy(update={**changed, "state": to, "updated_at": now})
            if applied is not None and result[3]:  # the snapshot was the stored state: this is, now
                self._known.remember(stamp, conversation)
            else:
                self._known.forget(cid)
        else:
            conversation = conversation_from_hash(result[2])
        if events:
            await self._tell(events, conversation.channel)
        return AppendResult(message, False, conversation)

    async def transcript(self, conversation_id: str, after: str | None = None) -> list[Message]:
        start = f"({after}" if after else "-"
        entries: Any = await self.redis.xrange(self.keys.transcript(conversation_id), min=start, max="+")
        return [message_from_entry(i, f[b"m"]) for i, f in entries]

    # -- state ---------------------------------------------------------------------------------------
    async def transition(
        self,
        conversation_id: str,
        to: ConversationState,
        event: ConversationEvent,
        updates: Mapping[str, Any] | None = None,
        allowed_from: Iterable[ConversationState] | None = None,
    ) -> None:
        """Change state atomically, only from a state that may lead to ``to``; records ``event``."""
        if allowed_from is None:
            allowed_from = [s for s, targets in ALLOWED_TRANSITIONS.items() if to in targets]
        keys = self.keys
        result = await self._transition(
            keys=[keys.conversation(conversation_id), keys.events(conversation_id)],
            args=[
                self.ttl_ms,
                " ".join(s.value for s in allowed_from),
                to.value,
                event.model_dump_json(),
                keys.live_channel(conversation_id),
                utcnow().isoformat(),
                *_encode_fields(updates or {}),
            ],
        )
        if not result or result[0] is None:
            raise ConversationNotFound(conversation_id)
        if int(result[0]) == 0:
            raise TransitionRefused(conversation_id, _decode(result[1]), to.value)
        await self._tell([event], _decode(result[2]))

    async def record(self, conversation_id: str, event: ConversationEvent) -> bool:
        """Add an event to the conversation's record (a failed delivery, say) and tell live readers. False,
        writing nothing, when the conversation has expired."""
        keys = self.keys
        result = await self._record(
            keys=[keys.conversation(conversation_id), keys.events(conversation_id)],
            args=[keys.live_channel(conversation_id), event.model_dump_json()],
        )
        return bool(result)

    async def discard(self, conversation_id: str) -> None:
        """Remove a conversation that was opened but never used (it lost a race to open one)."""
        keys = self.keys
        await asyncio.gather(
            self.batcher.command("DEL", keys.conversation(conversation_id), keys.transcript(conversation_id),
                                 keys.events(conversation_id)),
            self.batcher.command("ZREM", keys.conversation_index(), conversation_id),
        )

    async def signal(self, conversation_id: str, event: ConversationEvent) -> None:
        """A live-only event (someone is typing): published to the conversation's readers, never stored."""
        await self.redis.publish(self.keys.live_channel(conversation_id), "event\n" + event.model_dump_json())

    async def transcript_and_events(
        self, conversation_id: str
    ) -> tuple[list[Message], list[ConversationEvent]]:
        """Both streams of a conversation in one round trip (what an agent opening it needs)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.keys.transcript(conversation_id))
            pipe.xrange(self.keys.events(conversation_id))
            messages, events = await pipe.execute()
        return ([message_from_entry(i, f[b"m"]) for i, f in messages],
                [ConversationEvent.model_validate_json(f[b"e"]) for _, f in events])

    async def events(self, conversation_id: str) -> list[ConversationEvent]:
        entries: Any = await self.redis.xrange(self.keys.events(conversation_id))
        return [ConversationEvent.model_validate_json(f[b"e"]) for _, f in entries]


__all__ = [
    "AppendResult",
    "ConversationFull",
    "ConversationNotFound",
    "ConversationStore",
    "NewConversation",
    "StatusListener",
    "TransitionRefused",
    "conversation_from_hash",
    "decode_text",
    "fan_out",
    "tell_safely",
]
