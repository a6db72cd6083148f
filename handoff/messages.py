"""Customer-facing texts from messages.yaml, filled in for one customer (locale, channel, clock).

Times are written in the customer's locale (babel) and in the team's time zone, named, so "back Monday
08:00 Eastern Standard Time" is never ambiguous.
"""

from __future__ import annotations

import string
from datetime import datetime

from babel.dates import format_datetime, format_timedelta

from handoff.routing import Route
from handoff.ruleset import RuleSet

# Every key the policy may use; `rules check` reports any missing for a locale.
DEFLECT = "deflect"
CLARIFY = "clarify"
SELF_SERVICE = "after_hours_self_service"
BACK_UNKNOWN = "back_unknown"
# An asynchronous follow-up while the team is open (live help was not offered on this channel).
TICKET = "handoff_ticket"
# Added to the handoff message when the queue verifies identity and the customer is not verified.
VERIFY_IDENTITY = "verify_identity_notice"
# An asynchronous follow-up because nobody serving an open queue is online.
UNSTAFFED = "handoff_unstaffed"
# The agent desk's notices to the customer.
DESK = ("agent_joined", "transferred", "resolved", "back_to_bot", "agent_left", "welcome_back")
# Live queue updates: with an estimate, and when nobody serving the queue is online.
POSITION = "queue_position"
POSITION_UNSTAFFED = "queue_position_unstaffed"
BY_MODE = {
    "live": "handoff_live",
    "async": "handoff_async",
    "callback": "handoff_callback",
    "voicemail": "handoff_voicemail",
    "self_service": SELF_SERVICE,
}
# Arranging and keeping a callback (handoff/callbacks.py): required once any queue takes callbacks.
CALLBACK = (
    "callback_choose", "callback_number", "callback_invalid", "callback_not_now", "callback_scheduled",
    "callback_moved", "callback_cancelled", "callback_retry", "callback_failed", "callback_asap",
    "callback_asap_later", "callback_greeting", "callback_calling", "callback_confirm_number",
    "callback_choice", "callback_reminder",
)
REQUIRED = (
    DEFLECT, CLARIFY, BACK_UNKNOWN, TICKET, UNSTAFFED, VERIFY_IDENTITY, *BY_MODE.values(), *DESK, POSITION,
    POSITION_UNSTAFFED,
)
PLACEHOLDERS = frozenset({
    "queue", "back_at", "back_in", "agent", "position", "wait", "slot", "number", "number_end", "choices",
    "attempts", "n",
})


_SAMPLE = {
    "agent": "Alex",
    "position": "2",
    "wait": "5 minutes",
    "queue": "Billing",
    "back_at": "Monday 08:00 Eastern Standard Time",
    "back_in": "in 9 hours",
    "slot": "Monday 1 Dec, 15:00-16:00 Eastern Standard Time",
    "number": "+1 555-123-4567",
    "number_end": "4 5 6 7",
    "n": "2",
    "choices": "1. As soon as possible\n2. Monday 1 Dec, 15:00-16:00 Eastern Standard Time",
    "attempts": "3",
}


def check_template(text: str) -> str | None:
    """Why ``text`` cannot be filled in, or None: run on every message before a rule set is accepted."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        return f"cannot be filled in ({exc}); write a literal brace as {{{{ or }}}}"
    unknown = names - PLACEHOLDERS
    if unknown:
        return (f"unknown placeholder {{{sorted(unknown)[0]}}}; use "
                + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)))
    try:
        text.format_map(_SAMPLE)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        return f"cannot be filled in ({exc}); placeholders are written plainly, e.g. {{queue}}"
    return None


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:  # an unknown placeholder stays visible rather than crashing
        return "{" + key + "}"


def render(
    rules: RuleSet, key: str, locale: str, channel: str, *, now: datetime, route: Route | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, str]:
    """The message text and the locale it was written in."""
    text, used = rules.message(key, locale, channel)
    if not text:
        return text, used
    values = _Values(extra or {})
    if route is not None:
        values["queue"] = rules.queue(route.queue).name
        if route.back_at is not None:
            zone = rules.zone_of(rules.queue(route.queue).hours)
            values["back_at"] = format_datetime(route.back_at, "EEEE HH:mm zzzz", tzinfo=zone, locale=used)
            values["back_in"] = format_timedelta(route.back_at - now, add_direction=True, locale=used)
        else:
            unknown, _ = rules.message(BACK_UNKNOWN, used, channel)
            values["back_at"] = values["back_in"] = unknown
    return text.format_map(values).strip(), used
