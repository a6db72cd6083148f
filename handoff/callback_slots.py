"""The times a team can promise to call back: the next open slots of a queue's business hours.

A slot is promised only where the team is open for all of it, so a callback never comes due at 3 a.m. or
on a holiday, and "as soon as possible" means now when the team is open, else when it next opens. Slots
start on the team's local clock (09:00, 10:00 ... for hour-long slots), which is how people read times.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from handoff import hours as business_hours
from handoff.ruleset import ALWAYS, RuleSet
from handoff.schema import Callbacks, Hours
from sessions.models import CallbackSlot

# How far ahead slots are looked for: a team closed longer than this offers no slot.
_HORIZON = timedelta(days=14)
# Open hours are checked every this often inside a slot (closures start on quarter hours or longer spans).
_STEP = timedelta(minutes=15)


def _hours(rules: RuleSet, queue: str) -> Hours | None:
    name = rules.queue(queue).hours
    if name is None or name == ALWAYS:
        return None
    return rules.queues.hours[name]


def open_throughout(hours: Hours | None, start: datetime, end: datetime) -> bool:
    """The team is open from ``start`` until ``end`` (checked at its start and every quarter hour after)."""
    if hours is None:
        return True
    moment = start
    while moment < end:
        if not business_hours.is_open(hours, moment):
            return False
        moment += _STEP
    return business_hours.is_open(hours, end - timedelta(minutes=1))


def asap(rules: RuleSet, queue: str, now: datetime) -> CallbackSlot | None:
    """As soon as possible: now while the team is open, else its next opening (None: no opening known)."""
    hours = _hours(rules, queue)
    settings = rules.queue(queue).callbacks or Callbacks()
    earliest = now + timedelta(minutes=settings.lead_minutes)
    start = earliest if hours is None else business_hours.next_open(hours, earliest)
    return None if start is None else CallbackSlot(start=start.astimezone(UTC), asap=True)


def next_slots(rules: RuleSet, queue: str, now: datetime, count: int | None = None) -> list[CallbackSlot]:
    """The next ``count`` slots (the queue's ``callbacks.slots`` by default) wholly inside open hours,
    starting after ``now`` plus the queue's lead time, on the team's local clock."""
    settings = rules.queue(queue).callbacks or Callbacks()
    wanted = settings.slots if count is None else count
    length = timedelta(minutes=settings.slot_minutes)
    hours = _hours(rules, queue)
    zone = hours.zone if hours is not None else now.tzinfo
    earliest = (now + timedelta(minutes=settings.lead_minutes)).astimezone(zone)
    # The first slot boundary at or after ``earliest``: slots start on multiples of their length after
    # local midnight.
    midnight = earliest.replace(hour=0, minute=0, second=0, microsecond=0)
    minutes = (earliest - midnight).total_seconds() / 60
    step = settings.slot_minutes
    start = midnight + timedelta(minutes=-(-minutes // step) * step)
    slots: list[CallbackSlot] = []
    limit = earliest + _HORIZON
    while len(slots) < wanted and start < limit:
        # Built from the wall clock, so a slot keeps its local time across a daylight-saving change.
        local = start.replace(tzinfo=zone) if hours is not None else start
        end = local + length
        if hours is None or open_throughout(hours, local, end):
            slots.append(CallbackSlot(start=local.astimezone(UTC), end=end.astimezone(UTC)))
        start += length
        if start.date() != (start - length).date():
            start = start.replace(hour=0, minute=0)
    return slots


def choices(rules: RuleSet, queue: str, now: datetime) -> list[CallbackSlot]:
    """What the customer is offered: "as soon as possible", then the next open slots not already covered
    by it (when the team is open now, the slot in progress is what "as soon as possible" means)."""
    first = asap(rules, queue, now)
    if first is None:
        return []
    later = [slot for slot in next_slots(rules, queue, now) if slot.start > first.start]
    return [first, *later]


def in_utc(slot: CallbackSlot) -> CallbackSlot:
    """Stored and compared in UTC, whatever offset it was given with."""
    return CallbackSlot(start=slot.start.astimezone(UTC), end=slot.end.astimezone(UTC) if slot.end else None,
                        asap=slot.asap)


def keepable(rules: RuleSet, queue: str, slot: CallbackSlot, now: datetime) -> str | None:
    """Why a slot asked for by an agent or the API cannot be promised, or None when it can."""
    hours = _hours(rules, queue)
    if slot.end is not None and slot.end <= slot.start:
        return "the slot ends before it starts"
    if slot.start < now - timedelta(minutes=1):
        return "the slot is in the past"
    end = slot.end or slot.start + timedelta(
        minutes=(rules.queue(queue).callbacks or Callbacks()).slot_minutes
    )
    if slot.asap:
        end = slot.start + timedelta(minutes=1)
    if not open_throughout(hours, slot.start, end):
        return f"the {rules.queue(queue).name} team is not open for all of that slot"
    return None
