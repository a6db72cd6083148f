"""The handoff policy: after every bot turn, keep the bot, ask a clarifying question, or hand off, and why.

``decide`` is a pure function of (conversation snapshot, the customer's words and their signals, the bot's
turn, the clock, the rules, the queue load): no I/O, deterministic, fast enough to run on every turn
(tests/bench/bench_policy.py). The pipeline, `rules test` and `rules replay` all call this one function.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from handoff import messages
from handoff.routing import QueueLoad, Route, facts_for, route
from handoff.ruleset import RuleSet
from handoff.schema import AfterHoursMode, NotOffered, Queue
from handoff.signals import MessageSignals
from handoff.triggers import EXPLICIT_REQUEST, Fired, TriggerResult, evaluate, strongest
from sessions.models import BotTurn, Conversation, HandoffRecord, PolicySignals


class Action(StrEnum):
    CONTINUE = "continue"  # the bot's reply goes out
    CLARIFY = "clarify"  # a clarifying question replaces a low-confidence reply
    DEFLECT = "deflect"  # a first request for a person: the bot offers its one try
    DECLINE = "decline"  # a live person is not offered here; the customer is told why and what instead
    ESCALATE = "escalate"  # the conversation leaves the bot


@dataclass(frozen=True, slots=True)
class TurnInput:
    conversation: Conversation
    text: str
    turn: BotTurn
    message: MessageSignals
    now: datetime


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    signals: PolicySignals
    rules_version: str
    explanation: str
    trigger: Fired | None = None
    also: tuple[Fired, ...] = ()
    route: Route | None = None
    message_key: str | None = None
    # What the customer is told instead of the bot's reply (None: the bot's reply goes out).
    text: str | None = None
    locale: str | None = None
    fired: tuple[Fired, ...] = field(default=(), repr=False)

    @property
    def priority(self) -> int:
        if self.trigger is None:
            return 0
        boost = self.route.priority_boost if self.route else 0
        return max(0, min(9, self.trigger.priority + boost))

    @property
    def leaves_bot(self) -> bool:
        return self.action is Action.ESCALATE

    def record(self, now: datetime, queue_name: str = "") -> HandoffRecord:
        assert self.trigger is not None and self.route is not None, "only an escalation has a record"
        return HandoffRecord(
            reason=self.trigger.reason,
            trigger_rule=self.trigger.rule,
            explanation=self.trigger.explanation,
            priority=self.priority,
            also=[f.reason for f in self.also],
            queue=self.route.queue,
            queue_name=queue_name,
            skills=list(self.route.skills),
            mode=self.route.mode,
            route_rule=self.route.rule,
            route_explanation=self.route.explanation,
            overflow_from=self.route.overflow_from,
            back_at=self.route.back_at,
            language=self.locale,
            rules_version=self.rules_version,
            decided_at=now,
        )


def decide(inp: TurnInput, rules: RuleSet, load: Mapping[str, QueueLoad] | None = None) -> Decision:
    result = evaluate(rules, inp.conversation, inp.text, inp.turn, inp.message)
    signals = result.signals
    locale = _locale(rules, inp.conversation, signals)
    channel = inp.conversation.channel

    if not result.fired:
        if result.early_request:
            return _say(Action.DEFLECT, messages.DEFLECT, rules, inp, signals=signals, locale=locale,
                        why="first request for a person: the bot offers to help once")
        if result.clarify:
            return _say(Action.CLARIFY, messages.CLARIFY, rules, inp, signals=signals, locale=locale,
                        why="low confidence: the bot asks a clarifying question first")
        return Decision(Action.CONTINUE, signals, rules.version, "the bot answers")

    trigger = strongest(result.fired)
    also = tuple(f for f in result.fired if f is not trigger)
    facts = facts_for(inp.conversation, trigger, signals.last_intent, signals.last_family,
                      signals.language)
    blocked = _not_offered(rules, channel, inp.now)
    explicit = trigger.reason == EXPLICIT_REQUEST
    if blocked is not None and blocked.instead == "self_service" and explicit and not signals.declined:
        # Told once why a person is not available here; asking again gets a written follow-up.
        chosen = route(rules, facts, inp.now, load, instead="self_service")
        declined = signals.model_copy(update={"declined": 1})
        text, used = messages.render(rules, blocked.message, locale, channel, now=inp.now, route=chosen)
        return Decision(Action.DECLINE, declined, rules.version,
                        f"{trigger.explanation}; live help is not offered here ({blocked.id})",
                        trigger, also, chosen, blocked.message, text, used, result.fired)

    instead: AfterHoursMode | None = None
    key = None
    if blocked is not None:
        # No live person on this channel now, whatever the trigger: never promise one.
        instead = "async" if blocked.instead == "self_service" else blocked.instead
        key = blocked.message if blocked.instead != "self_service" else None
    chosen = route(rules, facts, inp.now, load, instead=instead)
    if chosen.mode == "self_service":
        if not signals.declined:
            declined = signals.model_copy(
                update={"declined": 1, "failed_turns": 0, "low_confidence_turns": 0}
            )
            text, used = messages.render(rules, messages.SELF_SERVICE, locale, channel, now=inp.now,
                                         route=chosen)
            return Decision(Action.DECLINE, declined, rules.version,
                            f"{trigger.explanation}; {chosen.explanation}", trigger, also, chosen,
                            messages.SELF_SERVICE, text, used, result.fired)
        chosen = replace(chosen, mode="async")
    if key is None:
        if chosen.mode == "async" and chosen.open_now:
            key = messages.UNSTAFFED if chosen.unstaffed else messages.TICKET
        else:
            key = messages.BY_MODE[chosen.mode]
    text, used = messages.render(rules, key, locale, channel, now=inp.now, route=chosen)
    if rules.queue(chosen.queue).verify_identity and not inp.conversation.customer.verified:
        notice, _ = messages.render(rules, messages.VERIFY_IDENTITY, used, channel, now=inp.now, route=chosen)
        text = f"{text} {notice}".strip()
    # Counters start afresh, so a conversation handed back to the bot is judged on what happens next.
    fresh = PolicySignals(language=signals.language, last_intent=signals.last_intent,
                          last_family=signals.last_family)
    return Decision(Action.ESCALATE, fresh, rules.version, f"{trigger.explanation}; {chosen.explanation}",
                    trigger, also, chosen, key, text, used, result.fired)


def reroute(decision: Decision, inp: TurnInput, rules: RuleSet, load: Mapping[str, QueueLoad]) -> Decision:
    """The same decision with the live queue load taken into account (overflow)."""
    return decide(inp, rules, load) if decision.leaves_bot else decision


def needs_load(decision: Decision, rules: RuleSet) -> list[str]:
    """Queues whose load can change this decision: one with an overflow limit or a rule for when nobody
    is online, and the queue it overflows to."""
    if decision.route is None:
        return []
    queue = rules.queue(decision.route.overflow_from or decision.route.queue)
    names = [decision.route.overflow_from or decision.route.queue]
    if queue.overflow is not None:
        names.append(queue.overflow.to)
    elif queue.when_unstaffed == "wait" and not _offers_callback_when_unstaffed(queue):
        return []
    return names


def _offers_callback_when_unstaffed(queue: Queue) -> bool:
    return queue.callbacks is not None and "unstaffed" in queue.callbacks.offer_when


def _not_offered(rules: RuleSet, channel: str, now: datetime) -> NotOffered | None:
    for rule in rules.triggers.explicit_request.not_offered:
        if rule.channels and channel not in rule.channels:
            continue
        if rule.only_during is not None and rules.is_open(rule.only_during, now):
            continue
        return rule
    return None


def _locale(rules: RuleSet, conversation: Conversation, signals: PolicySignals) -> str:
    for candidate in (conversation.customer.trusted("language"), signals.language):
        if candidate and candidate in rules.meta.locales:
            return candidate
    return rules.meta.default_locale


def _say(
    action: Action, key: str, rules: RuleSet, inp: TurnInput, *, signals: PolicySignals, locale: str, why: str
) -> Decision:
    text, used = messages.render(rules, key, locale, inp.conversation.channel, now=inp.now)
    return Decision(action, signals, rules.version, why, message_key=key, text=text, locale=used)


__all__ = ["Action", "Decision", "TriggerResult", "TurnInput", "decide", "needs_load", "reroute"]
