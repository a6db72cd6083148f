"""Writes outcome records as conversations hand off and end, and reads the day counters back.

Listens to the store's handoff steps (a handoff, an agent resolving or handing back, a customer abandoning, a
callback closed) and to quiet bot conversations (a bot-only ending has no event: the sweeper finds it). Each
record costs one read (the conversation's state, transcript and events, plus the customer's previous ending)
and one write (the record and its counters in one script on the day's tag, plus the customer's latest ending),
both through the store's batcher, so under load they share round trips with other conversations' steps.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time as monotonic_clock
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from handoff.review.buckets import increments
from handoff.review.record import REPEAT_WINDOW_SECONDS, Outcome, OutcomeRecord, Previous, RecordKind, build
from handoff.ruleset import RuleSet
from sessions.batching import RedisBatcher
from sessions.keys import Keys
from sessions.models import (
    Conversation,
    ConversationEvent,
    ConversationState,
    StatusKind,
    StatusUpdate,
    utcnow,
)
from sessions.store import conversation_from_hash, decode_text, message_from_entry

log = structlog.get_logger(__name__)

# The team's zone and the rules version in force: read when a record is made, so a rules reload applies.
TeamClock = Callable[[], tuple[ZoneInfo, str]]
# Steps after which the conversation is over for review (BACK_TO_BOT: the agent's part is over).
_ENDS: dict[StatusKind, Outcome] = {
    StatusKind.RESOLVED: Outcome.RESOLVED,
    StatusKind.BACK_TO_BOT: Outcome.BACK_TO_BOT,
    StatusKind.ABANDONED: Outcome.ABANDONED,
}
_IDLE_LEASE_MS = 60_000
DRAIN_SECONDS = 5.0
ARMED_REMEMBERED = 10_000
_IDLE_BATCH = 200


def _script(name: str) -> str:
    return (files("handoff") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def _pairs(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {decode_text(k): decode_text(v) for k, v in raw.items()}
    return {decode_text(k): decode_text(v) for k, v in zip(raw[::2], raw[1::2], strict=True)}


def team_zone(rules: RuleSet) -> ZoneInfo:
    """The zone the team's days and hours are counted in: the fallback queue's hours, else the first hours
    declared, else UTC (a team open around the clock)."""
    fallback = rules.queues.queues.get(rules.routing.fallback.queue)
    zone = rules.zone_of(fallback.hours if fallback else None)
    if zone is None and rules.queues.hours:
        zone = next(iter(rules.queues.hours.values())).zone
    return zone or ZoneInfo("UTC")


def days_back(today: date, days: int) -> list[date]:
    """The ``days`` calendar days ending with ``today``, oldest first."""
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def _ending_of(update: StatusUpdate, now: datetime) -> Ending | None:
    """The record a stored step calls for, if any."""
    cid = update.conversation_id
    outcome = _ENDS.get(update.kind)
    if outcome is not None:
        return Ending(cid, RecordKind.END, outcome, now)
    if update.kind in (StatusKind.QUEUED, StatusKind.ASYNC) and update.data.get("escalated"):
        return Ending(cid, RecordKind.HANDOFF, Outcome.ESCALATED, now)
    if update.kind is StatusKind.CALLBACK and update.status.get("callback") == "cancelled":
        return Ending(cid, RecordKind.END, Outcome.CALLBACK_CANCELLED, now)
    return None


@dataclass(frozen=True, slots=True)
class Ending:
    """A record to make: what happened and when."""

    conversation_id: str
    kind: RecordKind
    outcome: Outcome | None  # None: decide from the conversation (a quiet bot conversation)
    at: datetime


class ReviewRecorder:
    def __init__(
        self, redis: Redis, keys: Keys, team: TeamClock, *, retention_days: int, idle_seconds: float,
        batcher: RedisBatcher | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.team = team
        self.retention_days = retention_days
        self.idle_seconds = idle_seconds
        self.batcher = batcher or RedisBatcher(redis)
        self._write: AsyncScript = redis.register_script(_script("review_record"))
        self._take_idle: AsyncScript = redis.register_script(_script("review_idle"))
        self._pending: set[asyncio.Task[None]] = set()
        # When this instance last armed each recent conversation's quiet check (monotonic seconds).
        self._armed: OrderedDict[str, float] = OrderedDict()

    # -- listening ------------------------------------------------------------------------------------
    async def on_status(self, update: StatusUpdate) -> None:
        """A handoff step was stored: record a handoff or an ending when it is one, in the background, so the
        step (an agent's resolve, a caller's hang-up) does not wait for review's read and write."""
        ending = _ending_of(update, utcnow())
        if ending is None:
            return
        task = asyncio.create_task(self._record_logged(ending), name=f"review-{ending.conversation_id}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record_logged(self, ending: Ending) -> None:
        try:
            await self.record(ending)
        except RedisError as exc:
            log.warning("review.record_failed", conversation_id=ending.conversation_id,
                        error=type(exc).__name__)
        except Exception:
            log.exception("review.record_crashed", conversation_id=ending.conversation_id)

    async def drain(self) -> None:
        """Wait (at most DRAIN_SECONDS) for the records still being written: at shutdown, and in tests."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=DRAIN_SECONDS)

    def arm(self, conversation: Conversation) -> None:
        """The bot answered: look again once it could have gone quiet. Fire and forget, and at most once per
        half idle time per conversation on this instance: the sweeper re-arms a conversation still talking,
        so arming on every turn would only add a command per message (`ZADD NX` keeps the earliest check).
        A conversation that ended quietly was last armed at least the idle time ago, so it is armed again
        when it comes back. Never raised into the bot's turn: a failed arm costs one bot-only ending in
        review, not the customer's answer."""
        cid, now = conversation.id, monotonic_clock.monotonic()
        armed = self._armed.get(cid)
        if armed is not None and now - armed < self.idle_seconds / 2:
            return
        self._armed[cid] = now
        self._armed.move_to_end(cid)
        if len(self._armed) > ARMED_REMEMBERED:
            self._armed.popitem(last=False)
        due = (conversation.updated_at.timestamp() + self.idle_seconds) * 1000
        future = self.batcher.command("ZADD", self.keys.review_idle(), "NX", due, cid)
        future.add_done_callback(functools.partial(self._arm_done, cid))

    def _arm_done(self, cid: str, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if (exc := future.exception()) is not None:
            self._armed.pop(cid, None)  # the next turn tries again
            log.warning("review.arm_failed", conversation_id=cid, error=type(exc).__name__)

    # -- recording ------------------------------------------------------------------------------------
    async def record(self, ending: Ending) -> OutcomeRecord | None:
        """Build and store one record; None when the conversation is gone or, for a quiet check, not over."""
        cid, keys, batch = ending.conversation_id, self.keys, self.batcher
        raw_state, raw_messages, raw_events = await asyncio.gather(
            batch.command("HGETALL", keys.conversation(cid)),
            batch.command("XRANGE", keys.transcript(cid), "-", "+"),
            batch.command("XRANGE", keys.events(cid), "-", "+"),
        )
        if not raw_state:
            return None
        conversation = conversation_from_hash(raw_state)
        messages = [message_from_entry(i, _pairs(f)["m"]) for i, f in raw_messages]
        events = [ConversationEvent.model_validate_json(_pairs(f)["e"]) for _, f in raw_events]
        outcome = ending.outcome or self._quiet_outcome(conversation.state, conversation.handoff is not None,
                                                        messages, ending.at, conversation.updated_at)
        if outcome is None:
            return None
        # Only now is the customer known: their previous ending is a second read (for endings only).
        last_key = keys.review_last_contact(conversation.customer.id)
        raw_previous = await batch.command("GET", last_key) if ending.kind is RecordKind.END else None
        zone, version = self.team()
        previous = Previous.model_validate_json(raw_previous) if raw_previous else None
        record = build(conversation, messages, events, kind=ending.kind, outcome=outcome, at=ending.at,
                       zone=zone, rules_version=version, previous=previous)
        await self.write(record)
        log.info("review.recorded", conversation_id=cid, kind=record.kind.value, outcome=record.outcome.value)
        return record

    def _quiet_outcome(
        self, state: ConversationState, handed_off: bool, messages: Sequence[Any], now: datetime,
        updated_at: datetime,
    ) -> Outcome | None:
        if handed_off or state not in (ConversationState.BOT, ConversationState.RESOLVED):
            return None
        last = max([updated_at, *(m.ts for m in messages[-1:])])
        if (now - last).total_seconds() < self.idle_seconds:
            return None
        failed = 0
        for message in reversed(messages):
            if message.turn is None:
                continue
            if not message.turn.fallback:
                break
            failed += 1
        return Outcome.LEFT_AFTER_FAILURE if failed else Outcome.CONTAINED

    async def write(self, record: OutcomeRecord, extra: Iterable[tuple[str, float]] = ()) -> None:
        """The record, its counters and (for an ending) the customer's latest ending, in one round trip.

        Public so that tests and backfills can write a history with explicit times through the same path."""
        counters = [*increments(record).items(), *extra]
        day = record.day
        expires = self._expiry(date.fromisoformat(day))
        flat: list[Any] = [expires, record.model_dump_json()]
        for name, amount in counters:
            flat.extend((name, repr(float(amount))))
        day_keys = [self.keys.review_records(day), self.keys.review_buckets(day)]
        calls = [self.batcher.script(self._write, day_keys, flat)]
        if record.kind is RecordKind.END:
            latest = Previous(conversation_id=record.conversation_id, at=record.at, outcome=record.outcome)
            calls.append(self.batcher.command("SET", self.keys.review_last_contact(record.customer_id),
                                              latest.model_dump_json(), "EX", REPEAT_WINDOW_SECONDS))
        await asyncio.gather(*calls)

    async def add_counters(self, day: date, counters: Mapping[str, float]) -> None:
        """Add to one day's counters directly, in one round trip: for backfills and benchmarks that sum many
        records' ``increments`` first. Kept as long as the day's records."""
        key = self.keys.review_buckets(day.isoformat())
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, amount in counters.items():
                pipe.hincrbyfloat(key, name, amount)
            pipe.expireat(key, self._expiry(day))
            await pipe.execute()

    def _expiry(self, day: date) -> int:
        """Kept REVIEW_RETENTION_DAYS after the day ends (a day more, for the day's own time zone)."""
        ends = datetime.combine(day, time(), tzinfo=ZoneInfo("UTC")) + timedelta(days=self.retention_days + 2)
        return int(ends.timestamp())

    # -- quiet conversations -------------------------------------------------------------------------
    async def sweep_idle(self, now: datetime | None = None) -> int:
        """Record the bot-only endings of conversations that went quiet; re-arm the ones still talking."""
        now = now or utcnow()
        key = self.keys.review_idle()
        due = await self._take_idle(keys=[key],
                                    args=[int(now.timestamp() * 1000), _IDLE_LEASE_MS, _IDLE_BATCH])
        recorded = 0
        for raw in due:
            cid = decode_text(raw)
            try:
                record = await self.record(Ending(cid, RecordKind.END, None, now))
            except Exception:  # one unreadable conversation must not stop the others being recorded
                log.exception("review.idle_failed", conversation_id=cid)
                record = None
            if record is not None:
                recorded += 1
                await self.redis.zrem(key, cid)
                continue
            await self._rearm(cid, now)
        return recorded

    async def _rearm(self, cid: str, now: datetime) -> None:
        state = await self.redis.hmget(self.keys.conversation(cid), ["state", "updated_at", "handoff"])
        status, updated, handoff = (decode_text(v) if v is not None else None for v in state)
        if status not in (ConversationState.BOT, ConversationState.RESOLVED) or handoff:
            await self.redis.zrem(self.keys.review_idle(), cid)  # gone, or an agent's: its ending is recorded
            return
        last = datetime.fromisoformat(updated) if updated else now
        await self.redis.zadd(self.keys.review_idle(), {cid: (last.timestamp() + self.idle_seconds) * 1000})

    # -- reading --------------------------------------------------------------------------------------
    async def day_counters(self, days: Sequence[date]) -> list[dict[str, float]]:
        """The counters of each day, in one round trip (one hash per day)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(self.keys.review_buckets(day.isoformat()))
            raws: list[dict[bytes, bytes]] = await pipe.execute()
        return [{decode_text(k): float(v) for k, v in raw.items()} for raw in raws]

    async def records(self, days: Sequence[date], page: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Every raw record of ``days``, oldest first, read a page at a time (an async iterator of JSON)."""
        for day in days:
            key, start = self.keys.review_records(day.isoformat()), "-"
            while True:
                entries: Any = await self.redis.xrange(key, min=start, max="+", count=page)
                for entry_id, fields in entries:
                    yield json.loads(fields[b"r"])
                    start = f"({decode_text(entry_id)}"
                if len(entries) < page:
                    break
