"""`rules eval`: how the triggers generalize, measured on labelled customer messages written apart from them.

Scenarios check the rules against their own phrases; an evaluation set checks them against how customers
really write. Each item (a message, or a short conversation) runs through the real bot and the same
``decide`` the gateway uses, threading what the policy remembers from turn to turn. The first turn a
trigger decides (a handoff, or a decline that says why not) is the decision compared with the label; a
conversation that never gets there is a recognised request for a person if the bot made its one offer of
help, else none. Precision and recall per trigger and per locale, a confusion table and the wrong
decisions with their explanations tell a team what a change does before it goes live; the thresholds make
CI say no.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from handoff.labelled import DEFAULT_AT, NONE, Item, Thresholds
from handoff.policy import Action, Decision, TurnInput, decide
from handoff.ruleset import RuleSet
from handoff.signals import SignalReader
from sessions.models import BotTurn, Conversation, Customer, Direction, Message, SenderKind

HIGH_RISK = "high_risk"


class TurnBot(Protocol):
    """What evaluation needs of a bot: gateway.bots.base.Bot satisfies it."""

    async def respond(self, conversation: Conversation, message: Message) -> BotTurn: ...


def label_of(decision: Decision) -> str:
    """What the policy decided, in the set's labels: the stated trigger (a high-risk one by its rule), a
    recognised request for a person (the bot's one offer of help counts: the request was understood), or
    none."""
    trigger = decision.trigger
    if trigger is not None:
        return trigger.rule if trigger.reason == "high_risk_intent" else trigger.reason
    if decision.action is Action.DEFLECT:
        return "explicit_request"
    return NONE


@dataclass(frozen=True, slots=True)
class Outcome:
    item: Item
    decided: str
    # The turn (1-based) the decision was made on, and its explanation.
    turn: int
    explanation: str

    @property
    def right(self) -> bool:
        return self.decided == self.item.expect


@dataclass(frozen=True, slots=True)
class Score:
    label: str
    support: int  # items expected to have this label
    decided: int  # items decided to have it
    hits: int

    @property
    def precision(self) -> float:
        return self.hits / self.decided if self.decided else 1.0

    @property
    def recall(self) -> float:
        return self.hits / self.support if self.support else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Report:
    rules_version: str
    set_part: str | None
    thresholds: Thresholds
    outcomes: list[Outcome]
    decision_microseconds: list[float] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        seen = {o.item.expect for o in self.outcomes} | {o.decided for o in self.outcomes}
        return sorted(seen, key=lambda label: (label == NONE, label))

    def score(self, label: str, outcomes: Sequence[Outcome] | None = None) -> Score:
        pool = self.outcomes if outcomes is None else outcomes
        support = sum(o.item.expect == label for o in pool)
        decided = sum(o.decided == label for o in pool)
        hits = sum(o.item.expect == label and o.decided == label for o in pool)
        return Score(label, support, decided, hits)

    def high_risk(self, outcomes: Sequence[Outcome] | None = None) -> Score:
        """Every high-risk rule together: an item counts as found only when its own rule fired."""
        pool = self.outcomes if outcomes is None else outcomes
        support = sum(o.item.expect.startswith(HIGH_RISK) for o in pool)
        decided = sum(o.decided.startswith(HIGH_RISK) for o in pool)
        hits = sum(o.item.expect.startswith(HIGH_RISK) and o.right for o in pool)
        return Score(HIGH_RISK, support, decided, hits)

    def by_locale(self) -> dict[str, list[Outcome]]:
        grouped: dict[str, list[Outcome]] = defaultdict(list)
        for outcome in self.outcomes:
            grouped[outcome.item.locale].append(outcome)
        return dict(sorted(grouped.items()))

    @staticmethod
    def accuracy(outcomes: Sequence[Outcome]) -> float:
        return sum(o.right for o in outcomes) / len(outcomes) if outcomes else 1.0

    def confusion(self) -> dict[tuple[str, str], int]:
        return dict(Counter((o.item.expect, o.decided) for o in self.outcomes))

    def failures(self) -> list[str]:
        """Each threshold missed, as a sentence; empty when the rules pass."""
        t = self.thresholds
        missed: list[str] = []
        explicit = self.score("explicit_request")
        if explicit.support and explicit.recall < t.explicit_request_recall:
            missed.append(f"explicit_request recall {explicit.recall:.3f} < {t.explicit_request_recall}")
        risk = self.high_risk()
        if risk.support and risk.recall < t.high_risk_recall:
            missed.append(f"high-risk recall {risk.recall:.3f} < {t.high_risk_recall}")
        stay = self.score(NONE)
        if stay.support and stay.precision < t.none_precision:
            missed.append(f"none (stays with the bot) precision {stay.precision:.3f} < {t.none_precision}")
        locales = self.by_locale()
        if "en" in locales:
            english = self.accuracy(locales["en"])
            for locale, outcomes in locales.items():
                gap = english - self.accuracy(outcomes)
                if gap > t.locale_gap:
                    missed.append(f"{locale} accuracy {self.accuracy(outcomes):.3f} trails en {english:.3f} "
                                  f"by more than {t.locale_gap}")
        return missed


async def evaluate_set(
    rules: RuleSet, items: Iterable[Item], bot: TurnBot, reader: SignalReader, *, at: datetime = DEFAULT_AT,
    thresholds: Thresholds | None = None, part: str | None = None,
) -> Report:
    report = Report(rules.version, part, thresholds or Thresholds(), [])
    _ = rules.classifier  # trained before the clock starts: the gateway trains it when the rules load
    for item in items:
        outcome = await _run(rules, item, bot, reader, at=at, costs=report.decision_microseconds)
        report.outcomes.append(outcome)
    return report


async def _run(
    rules: RuleSet, item: Item, bot: TurnBot, reader: SignalReader, *, at: datetime, costs: list[float]
) -> Outcome:
    customer = Customer(id=f"eval-{item.id}", verified_fields=["email"] if item.verified else [])
    conversation = Conversation(id=f"eval-{item.id}", channel=item.channel, customer=customer)
    texts = item.messages
    asked: tuple[int, str] | None = None
    for number, text in enumerate(texts, start=1):
        message = Message(conversation_id=conversation.id, direction=Direction.INBOUND,
                          sender=SenderKind.CUSTOMER, text=text, channel=item.channel)
        turn = await bot.respond(conversation, message)
        read = reader.read(text, conversation.signals.language)
        started = time.perf_counter()
        decision = decide(TurnInput(conversation, text, turn, read, at), rules)
        costs.append((time.perf_counter() - started) * 1e6)
        if decision.trigger is not None:
            # Handed over (or told why not): the conversation's decision.
            return Outcome(item, label_of(decision), number, decision.explanation)
        if decision.action is Action.DEFLECT and asked is None:
            asked = (number, decision.explanation)
        conversation = conversation.model_copy(update={"signals": decision.signals})
    if asked is not None:
        # A request for a person the bot answered with its one offer of help: recognised, not handed over.
        return Outcome(item, "explicit_request", asked[0], asked[1])
    return Outcome(item, NONE, len(texts), decision.explanation)
