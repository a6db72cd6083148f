"""Handoff policy benchmark: decisions per second with the shipped rules, on one core.

The workload is every turn of the shipped scenarios (gateway/rules/demo_shop/scenarios), each with the
conversation snapshot it really has at that point, so the mix of continue / clarify / deflect / escalate,
open and closed queues, overflow and languages is the one the scenarios describe. Baselines in the same
process: the built-in FAQ bot classifying the same customer messages (work the gateway already does on
every turn), and reading each message's signals (sentiment and language, done once per message before
deciding). Prints one JSON object.

    python tests/bench/bench_policy.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.bots.faq import FaqBot  # noqa: E402
from gateway.settings import DEMO_KNOWLEDGE_BASE, DEMO_RULES  # noqa: E402
from handoff.loader import load_rules  # noqa: E402
from handoff.policy import TurnInput, decide  # noqa: E402
from handoff.routing import QueueLoad  # noqa: E402
from handoff.scenarios import load_scenarios, run_scenario, scenario_files  # noqa: E402
from handoff.signals import default_signal_reader  # noqa: E402
from sessions.models import BotTurn, Conversation, Customer, Identity  # noqa: E402


def workload() -> tuple[list[tuple[TurnInput, dict[str, QueueLoad]]], list[str]]:
    """Every scenario turn as the policy sees it: (input, queue load), plus the raw customer texts."""
    rules = load_rules(DEMO_RULES)
    reader = default_signal_reader(rules.meta.locales)
    inputs: list[tuple[TurnInput, dict[str, QueueLoad]]] = []
    texts: list[str] = []
    for path in scenario_files(DEMO_RULES / "scenarios"):
        loaded = load_scenarios(path)
        for scenario in loaded.scenarios:
            outcome = run_scenario(rules, scenario, loaded.families, reader)
            spec = scenario.customer
            identities = [Identity(channel=scenario.channel, address=spec.phone)] if spec.phone else []
            conversation = Conversation(id="bench", channel=scenario.channel, customer=Customer(
                id="bench", identities=identities, tier=spec.tier, language=spec.language,
                country=spec.country, verified_fields=spec.verified))
            load = {n: QueueLoad(s.depth, s.expected_wait_seconds, s.agents_online)
                    for n, s in scenario.load.items()}
            now = scenario.at
            for turn, decision in zip(scenario.turns, outcome.decisions, strict=False):
                now = turn.at or now
                said = turn.bot
                bot = BotTurn(text=said.text, intent=said.intent, confidence=said.confidence,
                              fallback=said.fallback, resolved=said.resolved,
                              family=said.family or loaded.families.get(said.intent or ""))
                inputs.append((TurnInput(conversation, turn.say, bot, reader.read(turn.say), now), load))
                texts.append(turn.say)
                conversation = conversation.model_copy(update={"signals": decision.signals})
    return inputs, texts


def rate(work: Callable[[], int], seconds: float) -> float:
    """Operations per second of ``work`` (which returns how many it did), repeated for ``seconds``."""
    work()  # warm caches (holiday calendars, phone numbers, regexes)
    gc.collect()
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        done += work()
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    rules = load_rules(DEMO_RULES)
    inputs, texts = workload()
    bot = FaqBot.from_file(DEMO_KNOWLEDGE_BASE)
    reader = default_signal_reader(rules.meta.locales)
    actions = Counter(decide(inp, rules, load).action.value for inp, load in inputs)

    def decisions() -> int:
        for inp, load in inputs:
            decide(inp, rules, load)
        return len(inputs)

    def classifications() -> int:
        for text in texts:
            bot.classify(text)
        return len(texts)

    def signals() -> int:
        for text in texts:
            reader.read(text)
        return len(texts)

    per_second = rate(decisions, args.seconds)
    classify_per_second = rate(classifications, args.seconds)
    signals_per_second = rate(signals, args.seconds)
    print(json.dumps({
        "rules_version": rules.version,
        "workload_turns": len(inputs),
        "workload_actions": dict(actions),
        "decisions_per_second": round(per_second),
        "decision_microseconds": round(1e6 / per_second, 1),
        "target_decisions_per_second": 20_000,
        "baseline_faq_classifications_per_second": round(classify_per_second),
        "decision_cost_vs_faq_classification": round(classify_per_second / per_second, 3),
        "signal_reads_per_second": round(signals_per_second),
        "signal_read_cost_vs_faq_classification": round(classify_per_second / signals_per_second, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
