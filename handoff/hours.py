"""Business hours: is a team open at an instant, and when does it open next.

Local time comes from the hours' own time zone, so a queue in Berlin and one in New York are judged by their
own clocks, daylight saving included. Public holidays come from the ``holidays`` package.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from handoff.schema import Hours

# How far ahead to look for the next opening; longer closures are reported as "no opening known".
_HORIZON_DAYS = 31


def _closed_by_calendar(hours: Hours, day: date) -> bool:
    return any(day in calendar for calendar in hours.calendars)


def _closure_covers(hours: Hours, day: date, minute: int) -> bool:
    for closure in hours.closures:
        if closure.day != day:
            continue
        start = closure.from_.hour * 60 + closure.from_.minute if closure.from_ else 0
        end = closure.until.hour * 60 + closure.until.minute if closure.until else 24 * 60
        if start <= minute < end:
            return True
    return False


def is_open(hours: Hours, at: datetime) -> bool:
    local = at.astimezone(hours.zone)
    day = local.date()
    minute = local.hour * 60 + local.minute
    if not any(start <= minute < end for start, end in hours.spans_by_weekday[local.weekday()]):
        return False
    if _closed_by_calendar(hours, day):
        return False
    return not _closure_covers(hours, day, minute)


def next_open(hours: Hours, at: datetime) -> datetime | None:
    """The first instant after ``at`` at which the team is open (``at`` itself when open now)."""
    if is_open(hours, at):
        return at
    local = at.astimezone(hours.zone)
    for offset in range(_HORIZON_DAYS + 1):
        day = local.date() + timedelta(days=offset)
        candidates = {start for start, _ in hours.spans_by_weekday[day.weekday()]}
        candidates.update(
            c.until.hour * 60 + c.until.minute for c in hours.closures if c.day == day and c.until
        )
        for minute in sorted(candidates):
            moment = datetime.combine(day, time(minute // 60, minute % 60), hours.zone)
            if moment > at and is_open(hours, moment):
                return moment
    return None


def always_open(hours: Hours) -> bool:
    return all(spans == ((0, 24 * 60),) for spans in hours.spans_by_weekday) and not (
        hours.holidays or hours.closures
    )


def never_open(hours: Hours) -> bool:
    return not any(hours.spans_by_weekday)
