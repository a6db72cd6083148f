"""Routing: which queue a handoff goes to, with which skills and priority, and whether anyone is there.

Ordered rules, first match wins; then overflow (by live queue load), then business hours decide between a
live queue and the queue's after-hours path for the customer's channel. Pure: the clock and the queue load
are arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import phonenumbers

from handoff.ruleset import RuleSet
from handoff.schema import AfterHoursMode, Match
from handoff.triggers import Fired
from sessions.models import Conversation

LIVE = "live"


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """A queue's live figures; the desk fills them in (expected wait is None until it can be estimated)."""

    depth: int = 0
    expected_wait_seconds: float | None = None
    # Agents online who serve the queue; None while unknown (then staffing changes nothing).
    agents_online: int | None = None


@dataclass(frozen=True, slots=True)
class RoutingFacts:
    """What routing rules can match on, each from the most trustworthy source available."""

    reason: str
    trigger: str
    intent: str | None
    family: str | None
    tier: str | None
    language: str | None
    country: str | None
    channel: str


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    skills: tuple[str, ...]
    priority_boost: int
    rule: str
    explanation: str
    # live, or the after-hours mode (async, callback, voicemail, self_service) the customer is offered.
    mode: str
    open_now: bool
    back_at: datetime | None
    overflow_from: str | None = None
    # Open, but nobody serving the queue was online.
    unstaffed: bool = False


@lru_cache(maxsize=4096)
def country_of_number(address: str) -> str | None:
    """ISO country of an E.164 number (``+4915...`` -> DE); WhatsApp's ``whatsapp:`` prefix is allowed."""
    number = address.removeprefix("whatsapp:")
    if not number.startswith("+"):
        return None
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None


def facts_for(
    conversation: Conversation, trigger: Fired, intent: str | None, family: str | None, language: str | None
) -> RoutingFacts:
    customer = conversation.customer
    country = customer.trusted("country")
    if country is None:
        country = next(filter(None, (country_of_number(i.address) for i in customer.identities)), None)
    return RoutingFacts(
        reason=trigger.reason,
        trigger=trigger.rule,
        intent=intent,
        family=family,
        # A tier is a privilege (a shorter queue), so only a verified one counts.
        tier=customer.trusted("tier"),
        language=customer.trusted("language") or language,
        country=country.upper() if country else None,
        channel=conversation.channel,
    )


def _matches(rules: RuleSet, when: Match, facts: RoutingFacts, now: datetime) -> bool:
    checks = (
        (when.reasons, facts.reason), (when.triggers, facts.trigger), (when.intents, facts.intent),
        (when.families, facts.family),
        (when.tiers, facts.tier), (when.languages, facts.language), (when.countries, facts.country),
        (when.channels, facts.channel),
    )
    if any(wanted and value not in wanted for wanted, value in checks):
        return False
    if when.during is not None and not rules.is_open(when.during, now):
        return False
    return when.outside is None or not rules.is_open(when.outside, now)


def _describe(when: Match, facts: RoutingFacts) -> str:
    parts = [
        f"{name} {value}"
        for name, wanted, value in (
            ("reason", when.reasons, facts.reason), ("trigger", when.triggers, facts.trigger),
            ("intent", when.intents, facts.intent),
            ("family", when.families, facts.family), ("tier", when.tiers, facts.tier),
            ("language", when.languages, facts.language), ("country", when.countries, facts.country),
            ("channel", when.channels, facts.channel),
        )
        if wanted
    ]
    if when.during:
        parts.append(f"during {when.during} hours")
    if when.outside:
        parts.append(f"outside {when.outside} hours")
    return ", ".join(parts) or "every handoff"


def _unstaffed(load: Mapping[str, QueueLoad] | None, queue: str) -> bool:
    current = load.get(queue) if load else None
    return current is not None and current.agents_online == 0


def _overflows(rules: RuleSet, queue: str, load: Mapping[str, QueueLoad]) -> str | None:
    overflow = rules.queue(queue).overflow
    current = load.get(queue)
    if overflow is None or current is None:
        return None
    if rules.queue(queue).when_unstaffed == "overflow" and current.agents_online == 0:
        return "nobody serving it is online"
    if overflow.max_depth is not None and current.depth >= overflow.max_depth:
        return f"{current.depth} waiting (limit {overflow.max_depth})"
    wait = current.expected_wait_seconds
    if overflow.max_wait_seconds is not None and wait is not None and wait > overflow.max_wait_seconds:
        return f"expected wait {round(wait)}s (limit {overflow.max_wait_seconds}s)"
    return None


def route(
    rules: RuleSet,
    facts: RoutingFacts,
    now: datetime,
    load: Mapping[str, QueueLoad] | None = None,
    instead: AfterHoursMode | None = None,
) -> Route:
    """Pick the queue and say why. ``instead`` forces a non-live path (a request declined on this channel)."""
    for rule in rules.routing.rules:
        if _matches(rules, rule.when, facts, now):
            queue, skills, boost = rule.queue, rule.skills, rule.priority_boost
            rule_id, explanation = rule.id, f"{rule.id}: {_describe(rule.when, facts)}"
            if rule.note:
                explanation += f" ({rule.note})"
            break
    else:
        fallback = rules.routing.fallback
        queue, skills, boost = fallback.queue, fallback.skills, 0
        rule_id, explanation = "fallback", "fallback: no routing rule matched"

    overflow_from = None
    if load and (why := _overflows(rules, queue, load)):
        overflow_from, queue = queue, rules.queue(queue).overflow.to  # type: ignore[union-attr]
        explanation += f"; overflow from {overflow_from} to {queue}: {why}"

    target = rules.queue(queue)
    all_skills = tuple(dict.fromkeys([*target.skills, *skills]))
    open_now = rules.is_open(target.hours, now)
    back_at = None if open_now else rules.next_open(target.hours, now)
    unstaffed = open_now and _unstaffed(load, queue)
    after_hours = target.after_hours.get(facts.channel) or target.after_hours.get("default", "async")
    mode: str
    if instead is not None:
        mode = instead
    elif open_now and unstaffed and target.when_unstaffed == "after_hours":
        # Self-help pointers say the team is closed; an open team with nobody in takes a message instead.
        mode = "async" if after_hours == "self_service" else after_hours
        explanation += f"; nobody serving {queue} is online, after-hours path {mode}"
    elif open_now:
        mode = LIVE
    else:
        mode = after_hours
        explanation += f"; {queue} is closed, after-hours path {mode}"
    return Route(queue, all_skills, boost, rule_id, explanation, mode, open_now, back_at, overflow_from,
                 unstaffed)
