"""What review needs to know about one conversation, built from what the conversation already stores.

A pure function of the conversation's state, its transcript and its event stream: the recorder reads those in
one round trip and writes the result; tests and a future backfill build the same record from the same input.
Team-local hour, weekday and day are computed here, at write time, in the team's time zone, so a DST change
moves nothing that was already counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from sessions.models import Conversation, ConversationEvent, Message, SenderKind

# Days a returning customer counts as a repeat contact (the "came back within 7 days").
REPEAT_WINDOW_SECONDS = 7 * 24 * 3600


class RecordKind(StrEnum):
    # A conversation left the bot for a queue: escalation volume and routing are counted at this moment.
    HANDOFF = "handoff"
    # A conversation ended: outcomes, waits, context ratings and repeat contact are counted at this moment.
    END = "end"


class Outcome(StrEnum):
    ESCALATED = "escalated"  # a handoff record's outcome: the conversation is still going on
    CONTAINED = "contained"  # the bot alone, and its last answer was not a failure
    LEFT_AFTER_FAILURE = "left_after_failure"  # the bot alone, and the customer left after failed answers
    RESOLVED = "resolved"  # an agent resolved it
    BACK_TO_BOT = "back_to_bot"  # an agent handed it back to the bot
    ABANDONED = "abandoned"  # the customer left while waiting for an agent
    CALLBACK_CANCELLED = "callback_cancelled"  # the callback they were promised was cancelled


# Outcomes of conversations no agent took part in: what repeat contact after the bot alone is measured on.
BOT_ONLY = frozenset({Outcome.CONTAINED, Outcome.LEFT_AFTER_FAILURE})


class Transfer(BaseModel):
    from_queue: str
    to_queue: str


class OutcomeRecord(BaseModel):
    """One line of `handoff-gateway review export`; every time is UTC, every duration in seconds."""

    conversation_id: str
    customer_id: str
    kind: RecordKind
    outcome: Outcome
    at: datetime
    started_at: datetime
    # The team-local calendar day, hour (0-23) and weekday (0 = Monday) of ``at``.
    day: str
    hour: int
    weekday: int
    channel: str
    locale: str | None = None
    country: str | None = None
    tier: str | None = None
    # The intent the bot last understood before the handoff (or before the end, for the bot alone).
    intent: str | None = None
    intents: list[str] = Field(default_factory=list)
    bot_turns: int = 0
    failed_bot_answers: int = 0
    # How many failed bot answers came last, with nothing else between them and the end or the handoff.
    trailing_failures: int = 0
    trigger: str | None = None
    trigger_rule: str | None = None
    rules_version: str | None = None
    mode: str | None = None
    overflow_from: str | None = None
    first_queue: str | None = None
    final_queue: str | None = None
    transfers: list[Transfer] = Field(default_factory=list)
    to_queued: float | None = None
    to_offered: float | None = None
    to_agent: float | None = None
    to_first_reply: float | None = None
    handle: float | None = None
    told_wait: float | None = None
    real_wait: float | None = None
    abandoned_waiting: bool = False
    context_sufficient: bool | None = None
    delivery_failures: int = 0
    callback_outcome: str | None = None
    # Came back to a queue within the return window after an agent resolved it.
    reopened: bool = False
    # The same customer's previous conversation ended within REPEAT_WINDOW_SECONDS before this one began (or
    # after: a customer who writes on a second channel while the first is still open has come back too).
    repeat_of: str | None = None
    previous_outcome: Outcome | None = None


class Previous(BaseModel):
    """The customer's latest recorded ending, kept under their own key for repeat contact."""

    conversation_id: str
    at: datetime
    outcome: Outcome


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def _first(events: Sequence[ConversationEvent], kind: str, after: datetime | None = None) -> datetime | None:
    for event in events:
        if event.type == kind and (after is None or event.ts >= after):
            return event.ts
    return None


def _bot_turns(
    messages: Sequence[Message], notice: Message | None
) -> tuple[int, int, int, list[str], str | None]:
    """Bot answers before the handoff ``notice`` (all, without one): how many, how many failed, how many
    failed last, the intents understood, and the last one (the handoff's own turn included in both)."""
    turns = failed = trailing = 0
    intents: list[str] = []
    last: str | None = None
    for message in messages:
        turn = message.turn
        if turn is None or message.sender not in (SenderKind.BOT, SenderKind.SYSTEM):
            continue
        if message is not notice and message.sender is SenderKind.BOT:
            turns += 1
            failed += turn.fallback
            trailing = trailing + 1 if turn.fallback else 0
        if turn.intent and not turn.fallback:
            last = turn.intent
            if turn.intent not in intents:
                intents.append(turn.intent)
        if message is notice:
            break
    return turns, failed, trailing, intents, last


def _told_wait(events: Sequence[ConversationEvent]) -> float | None:
    """The first wait the customer was told, from any handoff step's status that carried one."""
    for event in events:
        status = event.data.get("status")
        if isinstance(status, dict) and isinstance(status.get("eta_seconds"), int | float):
            return float(status["eta_seconds"])
    return None


def _queues(
    conversation: Conversation, events: Sequence[ConversationEvent]
) -> tuple[str | None, list[Transfer]]:
    first: str | None = None
    current: str | None = None
    transfers: list[Transfer] = []
    for event in events:
        if event.type == "handoff.escalated" and first is None:
            first = current = event.data.get("queue")
        elif event.type == "handoff.transferred":
            to = event.data.get("to_queue")
            if isinstance(to, str):
                transfers.append(Transfer(from_queue=current or "", to_queue=to))
                current = to
    return first or conversation.queue, transfers


def build(
    conversation: Conversation,
    messages: Sequence[Message],
    events: Sequence[ConversationEvent],
    *,
    kind: RecordKind,
    outcome: Outcome,
    at: datetime,
    zone: ZoneInfo,
    rules_version: str | None = None,
    previous: Previous | None = None,
) -> OutcomeRecord:
    """The record of ``conversation`` as of ``at``: its handoff (``kind`` HANDOFF) or its end."""
    local = at.astimezone(zone)
    # The handoff's own notice in the transcript: stored at real time, while the handoff's events carry the
    # policy's clock (a demo's or a test's business clock may differ from it).
    notice = next((m for m in reversed(messages)
                   if m.sender is SenderKind.SYSTEM and "handoff" in m.channel_metadata), None)
    escalated = next((e for e in reversed(events) if e.type == "handoff.escalated"), None)
    handed_at = notice.ts if notice is not None else (escalated.ts if escalated is not None else None)
    turns, failed, trailing, intents, last_intent = _bot_turns(messages, notice)
    handoff = conversation.handoff
    first_queue, transfers = _queues(conversation, events)
    # Queued in the handoff's own step for a live handoff; later (at a callback's slot, say) otherwise.
    live = any(e.type == "handoff.queued" and e.data.get("escalated") for e in events)
    queued = handed_at if live else _first(events, "handoff.queued", handed_at)
    offered = _first(events, "handoff.offered", handed_at)
    assigned = _first(events, "handoff.assigned", handed_at)
    first_reply = next((m.ts for m in messages if m.sender is SenderKind.AGENT
                        and (assigned is None or m.ts >= assigned)), None)
    resolved = next((e for e in reversed(events) if e.type == "handoff.resolved"), None)
    context = resolved.data.get("context_sufficient") if resolved is not None else None
    ended = kind is RecordKind.END
    repeat = (
        previous is not None and previous.conversation_id != conversation.id
        and (conversation.created_at - previous.at).total_seconds() <= REPEAT_WINDOW_SECONDS
    )
    customer = conversation.customer
    return OutcomeRecord(
        conversation_id=conversation.id,
        customer_id=customer.id,
        kind=kind,
        outcome=outcome,
        at=at,
        started_at=conversation.created_at,
        day=local.date().isoformat(),
        hour=local.hour,
        weekday=local.weekday(),
        channel=conversation.channel,
        locale=(handoff.language if handoff else None) or conversation.signals.language or customer.language,
        country=customer.country,
        tier=customer.tier,
        intent=last_intent or conversation.last_intent,
        intents=intents,
        bot_turns=turns,
        failed_bot_answers=failed,
        trailing_failures=trailing,
        trigger=handoff.reason if handoff else None,
        trigger_rule=handoff.trigger_rule if handoff else None,
        rules_version=handoff.rules_version if handoff else rules_version,
        mode=handoff.mode if handoff else None,
        overflow_from=handoff.overflow_from if handoff else None,
        first_queue=first_queue if handoff else None,
        final_queue=conversation.queue if handoff else None,
        transfers=transfers,
        to_queued=_seconds(handed_at, queued),
        to_offered=_seconds(handed_at, offered),
        to_agent=_seconds(handed_at, assigned),
        to_first_reply=_seconds(handed_at, first_reply),
        handle=_seconds(assigned, at) if ended and assigned is not None and outcome is not Outcome.ABANDONED
        else None,
        told_wait=_told_wait(events),
        real_wait=_seconds(queued, assigned or (at if outcome is Outcome.ABANDONED else None)),
        abandoned_waiting=outcome is Outcome.ABANDONED,
        context_sufficient=context if isinstance(context, bool) else None,
        delivery_failures=sum(1 for e in events if e.type == "delivery.failed"),
        callback_outcome=conversation.callback.state if conversation.callback else None,
        reopened=any(e.type == "handoff.queued" and e.data.get("returning") for e in events),
        repeat_of=previous.conversation_id if repeat and previous else None,
        previous_outcome=previous.outcome if repeat and previous else None,
    )
