"""Scenario files: conversations written down with what the rules should decide at each turn.

`handoff-gateway rules test` runs them through the same ``decide`` the gateway uses, threading what the
policy remembers from turn to turn exactly as the pipeline does, so a passing scenario is how the live
gateway behaves for the bot turns it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from handoff.callback_offers import offer_reason
from handoff.policy import Action, Decision, TurnInput, decide
from handoff.problems import Problem, RulesError
from handoff.routing import QueueLoad
from handoff.ruleset import RuleSet
from handoff.signals import SignalReader
from handoff.sources import SourceMap
from handoff.yaml_text import read_yaml
from sessions.models import BotTurn, Conversation, Customer, Identity


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BotSays(_Strict):
    intent: str | None = None
    family: str | None = None
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.9
    fallback: bool = False
    resolved: bool = False
    text: str = "(the bot's answer)"


class Expect(_Strict):
    action: Action | None = None
    reason: str | None = None
    trigger: str | None = None
    queue: str | None = None
    route: str | None = None
    priority: int | None = None
    mode: str | None = None
    locale: str | None = None
    overflow_from: str | None = None
    # Why a callback is offered right after the handoff (after_hours, unstaffed, asked), or "none".
    callback: str | None = None
    # Parts of the customer-facing text that must appear in it.
    message: list[str] = Field(default_factory=list)


class Turn(_Strict):
    say: str
    bot: BotSays = BotSays()
    at: AwareDatetime | None = None
    expect: Expect | None = None


class CustomerSpec(_Strict):
    tier: str | None = None
    language: str | None = None
    country: str | None = None
    # Which of the above the website signed; only these count for tier-, language- and country routing.
    verified: list[str] = Field(default_factory=list)
    phone: str | None = None


class Scenario(_Strict):
    name: str
    channel: str = "webchat"
    at: AwareDatetime
    customer: CustomerSpec = CustomerSpec()
    load: dict[str, QueueLoadSpec] = Field(default_factory=dict)
    turns: list[Turn] = Field(min_length=1)


class QueueLoadSpec(_Strict):
    depth: int = 0
    expected_wait_seconds: float | None = None
    agents_online: int | None = None


class ScenarioFile(_Strict):
    # The bot's intent families, so a turn can name only its intent.
    families: dict[str, str] = Field(default_factory=dict)
    scenarios: list[Scenario] = Field(min_length=1)


Scenario.model_rebuild()


@dataclass
class Outcome:
    file: str
    name: str
    failures: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def load_scenarios(path: Path) -> ScenarioFile:
    try:
        data = read_yaml(path.read_text(encoding="utf-8"))
        return ScenarioFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError([Problem(path.name, None, "", f"cannot be read: {exc}")]) from None
    except ValidationError as exc:
        source = SourceMap(path.read_text(encoding="utf-8"))
        raise RulesError([
            Problem(path.name, source.line(list(e["loc"])), ".".join(str(p) for p in e["loc"]),
                    e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]) from None


def scenario_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))


def run_scenario(
    rules: RuleSet, scenario: Scenario, families: dict[str, str], signals: SignalReader, file: str = ""
) -> Outcome:
    outcome = Outcome(file, scenario.name)
    spec = scenario.customer
    identities = [Identity(channel=scenario.channel, address=spec.phone)] if spec.phone else []
    customer = Customer(id="scenario", identities=identities, tier=spec.tier, language=spec.language,
                        country=spec.country, verified_fields=spec.verified)
    conversation = Conversation(id="scenario", channel=scenario.channel, customer=customer)
    load = {name: QueueLoad(s.depth, s.expected_wait_seconds, s.agents_online)
            for name, s in scenario.load.items()}
    now = scenario.at
    for number, turn in enumerate(scenario.turns, start=1):
        now = turn.at or now
        said = turn.bot
        bot = BotTurn(text=said.text, intent=said.intent, confidence=said.confidence, fallback=said.fallback,
                      resolved=said.resolved, family=said.family or families.get(said.intent or ""))
        read = signals.read(turn.say, conversation.signals.language)
        decision = decide(TurnInput(conversation, turn.say, bot, read, now), rules, load)
        outcome.decisions.append(decision)
        if turn.expect is not None:
            failures = _compare(turn.expect, decision, rules, turn.say)
            outcome.failures.extend(f"turn {number} ({turn.say!r}): {f}" for f in failures)
        if decision.leaves_bot and number < len(scenario.turns):
            outcome.failures.append(f"turn {number} handed off; the later turns would never reach the bot")
            break
        conversation = conversation.model_copy(update={"signals": decision.signals})
    return outcome


def _compare(expect: Expect, decision: Decision, rules: RuleSet, said: str) -> list[str]:
    route = decision.route
    actual: dict[str, Any] = {
        "action": decision.action,
        "reason": decision.trigger.reason if decision.trigger else None,
        "trigger": decision.trigger.rule if decision.trigger else None,
        "queue": route.queue if route else None,
        "route": route.rule if route else None,
        "priority": decision.priority,
        "mode": route.mode if route else None,
        "locale": decision.locale,
        "overflow_from": route.overflow_from if route else None,
        "callback": (offer_reason(rules, route, said) or "none") if route and decision.leaves_bot else None,
    }
    failures = [
        f"expected {name} {wanted}, got {actual[name]} ({decision.explanation})"
        for name, wanted in expect.model_dump(exclude={"message"}, exclude_none=True).items()
        if actual[name] != wanted
    ]
    text = decision.text or ""
    failures.extend(
        f"expected the message to contain {part!r}, got {text!r}"
        for part in expect.message
        if part not in text
    )
    return failures


def run_directory(rules: RuleSet, directory: Path, signals: SignalReader) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for path in scenario_files(directory):
        loaded = load_scenarios(path)
        for scenario in loaded.scenarios:
            outcomes.append(run_scenario(rules, scenario, loaded.families, signals, path.name))
    return outcomes
