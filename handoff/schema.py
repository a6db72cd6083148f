"""The rule files, as pydantic models: what support operations may write, and nothing else.

Each YAML file of a rules directory has one model here. Unknown keys are errors (a typo must not silently
disable a rule), and every value is checked where it is read, so a loaded rule set is known to be usable.
docs/rules.md describes the same format for the people who edit it.
"""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import date, time
from functools import cached_property
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from handoff.matching import check_pattern

Identifier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Locale = Annotated[str, Field(pattern=r"^[a-z]{2}$")]
Priority = Annotated[int, Field(ge=0, le=9)]
# A phrase or pattern (handoff/matching.py, docs/rules.md), its syntax checked where it is written.
PhrasePattern = Annotated[str, Field(min_length=1, max_length=1000), AfterValidator(check_pattern)]
# Phrases for every language of the rule set ("all"), or per language (matched with that language's stems).
ALL_LOCALES = "all"


def _per_locale(value: object) -> object:
    """A plain list is shorthand for {all: [...]}, the form rule sets used before per-language lists."""
    return {ALL_LOCALES: value} if isinstance(value, list) else value


PhraseLocale = Annotated[str, Field(pattern=r"^([a-z]{2}|all)$")]
Phrases = Annotated[dict[PhraseLocale, list[PhrasePattern]], BeforeValidator(_per_locale)]

# What happens to a conversation routed to a closed queue (or not offered a live person).
AfterHoursMode = Literal["async", "callback", "voicemail", "self_service"]

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- ruleset.yaml --------------------------------------------------------------------------------------
class RuleSetMeta(Strict):
    version: Annotated[str, Field(min_length=1, max_length=64)]
    name: str = ""
    default_locale: Locale = "en"
    locales: list[Locale] = Field(default_factory=lambda: ["en"], min_length=1)

    @model_validator(mode="after")
    def _default_is_listed(self) -> RuleSetMeta:
        if self.default_locale not in self.locales:
            raise ValueError(f"default_locale {self.default_locale!r} is not in locales")
        return self


# -- queues.yaml ---------------------------------------------------------------------------------------
def _parse_day_key(key: str) -> list[int]:
    """``mon-fri``, ``sat`` or ``sat,sun`` -> weekday numbers (Monday is 0)."""
    days: list[int] = []
    for part in key.split(","):
        first, _, last = part.strip().partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise ValueError(f"{key!r}: write days as mon, tue, wed, thu, fri, sat, sun or a range mon-fri")
        start, end = _DAYS.index(first), _DAYS.index(last or first)
        if end < start:
            raise ValueError(f"{key!r}: a range runs forward, e.g. mon-fri")
        days.extend(range(start, end + 1))
    return days


def _parse_span(text: str) -> tuple[int, int]:
    match = _SPAN.match(text.replace(" ", ""))
    if not match:
        raise ValueError(f"{text!r}: opening hours are written HH:MM-HH:MM, e.g. 08:00-18:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end > 24 * 60 or end <= start:
        raise ValueError(f"{text!r}: closing time must be after opening time, at most 24:00")
    return start, end


class HolidayCalendar(Strict):
    """Public holidays from the ``holidays`` package: a country code and, optionally, a subdivision."""

    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    subdivision: str | None = None

    @model_validator(mode="after")
    def _known(self) -> HolidayCalendar:
        supported = holidays.list_supported_countries()
        if self.country not in supported:
            raise ValueError(f"no holiday calendar for country {self.country!r}")
        if self.subdivision is not None and self.subdivision not in supported[self.country]:
            raise ValueError(f"{self.country} has no subdivision {self.subdivision!r}")
        return self


class Closure(Strict):
    """A one-off closure: a whole day, or from / until a time on that day (team offsite, stocktake)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    day: date
    from_: time | None = Field(None, alias="from")
    until: time | None = None
    note: str = ""

    @field_validator("from_", "until", mode="before")
    @classmethod
    def _quoted(cls, value: object) -> object:
        # Unquoted, YAML reads 14:00 as the number 840 (base 60); only "HH:MM" strings are unambiguous.
        if value is not None and not (isinstance(value, str) and _TIME.fullmatch(value)):
            raise ValueError(f'write times as "HH:MM" in quotes, e.g. "14:00" (got {value!r})')
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Closure:
        if self.from_ is not None and self.until is not None and self.until <= self.from_:
            raise ValueError("until must be after from")
        return self


class Hours(Strict):
    timezone: str
    weekly: dict[str, str | list[str]]
    holidays: list[HolidayCalendar] = Field(default_factory=list)
    closures: list[Closure] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use a name like Europe/Berlin)") from None
        return value

    @field_validator("weekly")
    @classmethod
    def _week(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        seen: set[int] = set()
        for key, spans in value.items():
            days = _parse_day_key(key)
            if seen & set(days):
                raise ValueError(f"{key!r}: a day is listed twice")
            seen.update(days)
            for span in [spans] if isinstance(spans, str) else spans:
                if span != "closed":
                    _parse_span(span)
        return value

    @cached_property
    def spans_by_weekday(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """Opening spans in minutes after local midnight, one tuple per weekday, sorted."""
        week: list[list[tuple[int, int]]] = [[] for _ in _DAYS]
        for key, spans in self.weekly.items():
            for day in _parse_day_key(key):
                for span in [spans] if isinstance(spans, str) else spans:
                    if span != "closed":
                        week[day].append(_parse_span(span))
        return tuple(tuple(sorted(day)) for day in week)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def calendars(self) -> tuple[Container[date], ...]:
        return tuple(
            holidays.country_holidays(c.country, subdiv=c.subdivision) for c in self.holidays
        )


class Overflow(Strict):
    """Send new handoffs elsewhere while this queue is too long or too slow."""

    max_depth: Annotated[int, Field(ge=1)] | None = None
    max_wait_seconds: Annotated[int, Field(ge=1)] | None = None
    to: Identifier

    @model_validator(mode="after")
    def _has_limit(self) -> Overflow:
        if self.max_depth is None and self.max_wait_seconds is None:
            raise ValueError("give max_depth, max_wait_seconds or both")
        return self


CallbackCondition = Literal["after_hours", "unstaffed", "wait_over"]


class Callbacks(Strict):
    """Where a queue offers to call the customer back instead of making them wait (docs/callbacks.md)."""

    # When the offer is made unasked: the queue is closed, nobody who serves it is online, or the expected
    # wait passes ``callback_after_seconds``. A customer may always ask for one ("call me back").
    offer_when: list[CallbackCondition] = Field(default_factory=list)
    callback_after_seconds: Annotated[int, Field(ge=30)] | None = None
    # How many of the next open slots the customer may choose from, besides "as soon as possible".
    slots: Annotated[int, Field(ge=1, le=9)] = 3
    slot_minutes: Annotated[int, Field(ge=15, le=240)] = 60
    # A slot must start at least this long after the customer chooses it, so the team can plan for it.
    lead_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    retry_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30

    @model_validator(mode="after")
    def _wait_needs_threshold(self) -> Callbacks:
        if "wait_over" in self.offer_when and self.callback_after_seconds is None:
            raise ValueError("offer_when: wait_over needs callback_after_seconds")
        return self


def _async_by_default() -> dict[str, AfterHoursMode]:
    return {"default": "async"}


class Queue(Strict):
    name: str
    # Name of an entry under ``hours``, or "always" for a queue that is staffed around the clock.
    hours: str | None = None
    skills: list[str] = Field(default_factory=list)
    # Per channel (or "default"): what happens while the queue is closed.
    after_hours: dict[str, AfterHoursMode] = Field(default_factory=_async_by_default)
    overflow: Overflow | None = None
    # Open, but nobody who serves the queue is online: keep waiting (customers are told nobody is free),
    # overflow (to overflow.to), or take the channel's after-hours path.
    when_unstaffed: Literal["wait", "overflow", "after_hours"] = "wait"
    # The team must confirm who the customer is before acting: a customer the website did not vouch for is
    # told so up front, in the handoff message.
    verify_identity: bool = False
    # A retired queue is kept so old conversations still name it, but nothing may route to it.
    retired: bool = False
    # Calling customers back: unset, this queue takes no callbacks (a request for one waits in the queue).
    callbacks: Callbacks | None = None


def _unstaffed_needs_overflow(queue: Queue) -> Queue:
    if queue.when_unstaffed == "overflow" and queue.overflow is None:
        raise ValueError("when_unstaffed: overflow needs an overflow queue (overflow.to)")
    return queue


class QueuesFile(Strict):
    hours: dict[Identifier, Hours] = Field(default_factory=dict)
    queues: dict[Identifier, Queue] = Field(min_length=1)

    @field_validator("queues")
    @classmethod
    def _unstaffed(cls, queues: dict[str, Queue]) -> dict[str, Queue]:
        for queue in queues.values():
            _unstaffed_needs_overflow(queue)
        return queues


# -- triggers.yaml -------------------------------------------------------------------------------------
class NotOffered(Strict):
    """Where asking for a person does not reach a live one (a channel, or outside some hours)."""

    id: Identifier
    channels: list[str] = Field(default_factory=list)
    # Live transfers are offered only while these hours are open; empty means never on these channels.
    only_during: str | None = None
    message: Identifier
    # What the customer is offered instead; "self_service" keeps the bot, the others leave it.
    instead: AfterHoursMode = "async"


class ExplicitRequest(Strict):
    enabled: bool = True
    intents: list[str] = Field(default_factory=list)
    phrases: Phrases = Field(default_factory=dict)
    # The same words in another sense ("shipping agent"): a phrase match overlapping one of these does not
    # count, and neither does the bot's intent when that is all the message says.
    unless: Phrases = Field(default_factory=dict)
    # Which request transfers: 1 = the first, 2 = the bot tries once before transferring.
    transfer_on_request: Annotated[int, Field(ge=1, le=2)] = 2
    priority: Priority = 1
    not_offered: list[NotOffered] = Field(default_factory=list)


class FailedLimit(Strict):
    families: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    after: Annotated[int, Field(ge=1, le=20)]


class FailedTurns(Strict):
    enabled: bool = True
    after: Annotated[int, Field(ge=1, le=20)] = 3
    # First matching limit wins; a limit with no families or channels matches everything.
    limits: list[FailedLimit] = Field(default_factory=list)
    priority: Priority = 1


class HighRisk(Strict):
    id: Identifier
    enabled: bool = True
    intents: list[str] = Field(default_factory=list)
    families: list[str] = Field(default_factory=list)
    phrases: Phrases = Field(default_factory=dict)
    unless: Phrases = Field(default_factory=dict)
    priority: Priority = 3
    tags: list[str] = Field(default_factory=list)
    explanation: str = ""

    @model_validator(mode="after")
    def _matches_something(self) -> HighRisk:
        if not (self.intents or self.families or self.phrases):
            raise ValueError("a high-risk rule needs intents, families or phrases")
        return self


class LowConfidence(Strict):
    enabled: bool = True
    below: Annotated[float, Field(gt=0, le=1)] = 0.6
    clarify_first: bool = True
    # Consecutive low-confidence turns (the clarifying one included) that escalate.
    escalate_after: Annotated[int, Field(ge=1, le=10)] = 2
    priority: Priority = 1


class NegativeSentiment(Strict):
    enabled: bool = True
    window: Annotated[int, Field(ge=1, le=20)] = 3
    # A message scoring at or below this (-1 very negative .. 1 very positive) counts as negative.
    at_or_below: Annotated[float, Field(ge=-1, le=0)] = -0.4
    min_negative: Annotated[int, Field(ge=1, le=20)] = 2
    # Words that make a message count as negative whatever the scorer says: the built-in scorer reads
    # English only, so other languages' anger is written down here.
    phrases: Phrases = Field(default_factory=dict)
    unless: Phrases = Field(default_factory=dict)
    priority: Priority = 2

    @model_validator(mode="after")
    def _fits(self) -> NegativeSentiment:
        if self.min_negative > self.window:
            raise ValueError("min_negative cannot exceed window")
        return self


class ApprovalRequired(Strict):
    enabled: bool = True
    intents: list[str] = Field(default_factory=list)
    # Only customers whose identity the website vouched for; others get the bot's self-service answer.
    require_verified: bool = True
    priority: Priority = 2


class Unsupported(Strict):
    enabled: bool = True
    intents: list[str] = Field(default_factory=list)
    phrases: Phrases = Field(default_factory=dict)
    unless: Phrases = Field(default_factory=dict)
    priority: Priority = 1


class ClassifierSettings(Strict):
    """A classifier trained on labelled examples when the rules load (handoff/classifier.py): consulted only
    when no phrase matched and the bot was not sure."""

    # Files of labelled examples (rules eval's format), relative to the rules directory; globs allowed.
    examples: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    # The least probability at which a guess fires its trigger.
    min_probability: Annotated[float, Field(gt=0, le=1)] = 0.6
    # Which triggers it may fire; empty: explicit_request, every high-risk rule and unsupported_workflow.
    labels: list[str] = Field(default_factory=list)


class TriggersFile(Strict):
    # How sure the bot must be of an intent for it to fire a trigger by itself (0 to 1). Below it, only the
    # customer's words can; a bot that answers at 0.7 is guessing more often than a handoff can afford.
    intent_confidence: Annotated[float, Field(ge=0, le=1)] = 0.0
    classifier: ClassifierSettings | None = None
    explicit_request: ExplicitRequest = ExplicitRequest()
    failed_turns: FailedTurns = FailedTurns()
    high_risk: list[HighRisk] = Field(default_factory=list)
    low_confidence: LowConfidence = LowConfidence()
    negative_sentiment: NegativeSentiment = NegativeSentiment()
    approval_required: ApprovalRequired = ApprovalRequired()
    unsupported_workflow: Unsupported = Unsupported()


# -- routing.yaml --------------------------------------------------------------------------------------
class Match(Strict):
    """Every listed condition must hold; an empty list matches anything."""

    reasons: list[str] = Field(default_factory=list)
    # Trigger rules by name, e.g. high_risk.billing-dispute (what `rules test` prints as "trigger").
    triggers: list[str] = Field(default_factory=list)
    intents: list[str] = Field(default_factory=list)
    families: list[str] = Field(default_factory=list)
    tiers: list[str] = Field(default_factory=list)
    languages: list[Locale] = Field(default_factory=list)
    countries: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    # Name of an entry under ``hours`` in queues.yaml: the rule applies only while it is open / closed.
    during: str | None = None
    outside: str | None = None


class RouteRule(Strict):
    id: Identifier
    when: Match = Match()
    queue: Identifier
    skills: list[str] = Field(default_factory=list)
    # Added to the trigger's priority (VIPs first, say); may be negative.
    priority_boost: Annotated[int, Field(ge=-9, le=9)] = 0
    note: str = ""


class Fallback(Strict):
    queue: Identifier
    skills: list[str] = Field(default_factory=list)


class RoutingFile(Strict):
    rules: list[RouteRule] = Field(default_factory=list)
    fallback: Fallback

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[RouteRule]) -> list[RouteRule]:
        seen: set[str] = set()
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return rules


# -- messages.yaml -------------------------------------------------------------------------------------
# message key -> {locale: text} with optional per-channel overrides {channel: {locale: text}}.
MessageTexts = dict[str, str | dict[str, str]]


class MessagesFile(Strict):
    messages: dict[Identifier, MessageTexts]


FILES: dict[str, type[Strict]] = {
    "ruleset.yaml": RuleSetMeta,
    "queues.yaml": QueuesFile,
    "triggers.yaml": TriggersFile,
    "routing.yaml": RoutingFile,
    "messages.yaml": MessagesFile,
}
