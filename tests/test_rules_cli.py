"""`handoff-gateway rules check|test|eval|replay` as support operations run them: the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from gateway.settings import DEMO_RULES
from tests.chat import connect
from tests.rule_edits import with_explicit_phrases, without_classifier


def rules_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "RULES_DIR"}}
    environment.update(LOG_FORMAT="json", **env)
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=environment, capture_output=True,
                          text=True, timeout=60, check=False)


def copy_of_rules(tmp_path: Path, name: str = "rules") -> Path:
    target = tmp_path / name
    shutil.copytree(DEMO_RULES, target)
    return target


def test_check_passes_the_shipped_rules() -> None:
    result = rules_cli("rules", "check")
    assert result.returncode == 0, result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_check_fails_a_broken_set_with_the_line_to_fix(tmp_path: Path) -> None:
    rules = copy_of_rules(tmp_path)
    triggers = rules / "triggers.yaml"
    triggers.write_text(triggers.read_text().replace("  below: 0.72", "  below: high"))
    result = rules_cli("rules", "check", str(rules))
    assert result.returncode == 1
    line = next(n for n, t in enumerate(triggers.read_text().splitlines(), 1) if "below: high" in t)
    assert f"error: triggers.yaml:{line}: low_confidence.below: Input should be a valid number" in result.stderr


def test_test_runs_every_shipped_scenario() -> None:
    result = rules_cli("rules", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("PASS")]
    assert len(passed) >= 30 and "FAIL" not in result.stdout
    assert f"{len(passed)} passed, 0 failed" in result.stdout


def test_test_fails_when_a_rule_change_breaks_a_scenario(tmp_path: Path) -> None:
    rules = copy_of_rules(tmp_path)
    triggers = rules / "triggers.yaml"
    triggers.write_text(triggers.read_text().replace("transfer_on_request: 2", "transfer_on_request: 1"))
    result = rules_cli("rules", "test", str(rules))
    assert result.returncode == 1
    assert "FAIL  triggers.yaml: asking for a person twice reaches a handoff" in result.stdout
    assert "turn 1 ('I want to talk to a human'): expected action deflect, got escalate" in result.stdout


def test_test_refuses_a_broken_scenario_file(tmp_path: Path) -> None:
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "bad.yaml").write_text("scenarios:\n  - name: no clock\n    turns: [{say: hi}]\n")
    result = rules_cli("rules", "test", "--scenarios", str(scenarios))
    assert result.returncode == 1
    assert "bad.yaml:2: scenarios.0.at: Field required" in result.stderr


async def test_replay_shows_what_a_candidate_would_change(
    start_gateway: Any, http: aiohttp.ClientSession, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    base = await start_gateway()
    dispute = await connect(http, base)
    await dispute.say_until_handoff("I want to dispute a charge on my card")
    asks_once = await connect(http, base)
    await asks_once.say("I want to talk to a human")
    await asks_once.say("where is my order")
    plain = await connect(http, base)
    await plain.say("how much is shipping")

    env = {"REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace}
    export = rules_cli("conversations", "--jsonl", **env)
    assert export.returncode == 0, export.stderr
    recorded = tmp_path / "conversations.jsonl"
    recorded.write_text(export.stdout)
    assert len(export.stdout.splitlines()) == 3

    candidate = copy_of_rules(tmp_path, "candidate")
    routing = candidate / "routing.yaml"
    routing.write_text(routing.read_text().replace("    queue: billing\n", "    queue: general\n"))
    triggers = candidate / "triggers.yaml"
    triggers.write_text(triggers.read_text().replace("transfer_on_request: 2", "transfer_on_request: 1"))

    for source in (["--from", str(recorded)], []):  # from the export, then straight from Redis
        result = rules_cli("rules", "replay", "--candidate", str(candidate), *source, **env)
        assert result.returncode == 0, result.stderr
        report = result.stdout
        assert "replayed 3 conversations" in report
        assert "escalated: 1 -> 2 (33.3% -> 66.7%)" in report
        assert f"newly escalated: 1  (e.g. {asks_once.conversation_id})" in report
        assert f"billing -> general: 1  (e.g. {dispute.conversation_id})" in report
        assert "human_request" in report and "webchat" in report


def test_eval_prints_precision_recall_confusion_and_cost_and_passes_the_tuned_set() -> None:
    result = rules_cli("rules", "eval", "--set", str(DEMO_RULES / "eval" / "dev.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "233 items, part dev" in out
    for heading in ("precision", "recall", "F1", "per locale: precision / recall / F1",
                    "confusion: rows expected, columns decided",
                    "wrong decisions:", "decision cost:", "thresholds: all met"):
        assert heading in out
    assert "high_risk (all rules)" in out and "\nde " in out and "\nes " in out


def test_eval_fails_rules_that_miss_the_thresholds_and_shows_why(tmp_path: Path) -> None:
    rules = copy_of_rules(tmp_path)
    triggers = rules / "triggers.yaml"
    # The old, exact way, and no classifier to catch what it misses.
    triggers.write_text(without_classifier(with_explicit_phrases(triggers.read_text(), "[human]")))
    result = rules_cli("rules", "eval", str(rules), "--set", str(DEMO_RULES / "eval" / "dev.yaml"))
    assert result.returncode == 1
    assert "thresholds: MISSED: explicit_request recall" in result.stdout
    wrong = [line for line in result.stdout.splitlines() if "expected explicit_request, decided none" in line]
    assert wrong, result.stdout


def test_eval_json_and_a_broken_set_named_by_line(tmp_path: Path) -> None:
    result = rules_cli("rules", "eval", "--json", "--set", str(DEMO_RULES / "eval" / "dev.yaml"))
    figures = json.loads(result.stdout)
    assert figures["items"] == 233 and figures["missed"] == []
    assert figures["triggers"]["explicit_request"]["recall"] >= 0.98
    assert {"en", "de", "es"} <= set(figures["locales"])
    broken = tmp_path / "set.yaml"
    broken.write_text("part: test\nitems:\n  - id: a\n    locale: en\n    says: hi\n")
    result = rules_cli("rules", "eval", "--set", str(broken))
    assert result.returncode == 1
    assert f"{broken}:3: items.0.expect: Field required" in result.stderr
