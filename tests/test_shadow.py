"""Shadow rules: a candidate rule set decides every live bot turn without acting, and where it disagrees with
the rules in force is counted for review, over real conversations through the real pipeline."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway.settings import DEMO_RULES
from handoff.shadow import ShadowLog, Verdict
from sessions.keys import Keys
from tests.chat import connect
from tests.test_desk import handed_off
from tests.test_review import review_cli

FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def candidate_rules(tmp_path: Path) -> Path:
    """The demo rules with one change: billing questions go to the general team."""
    target = tmp_path / "candidate"
    shutil.copytree(DEMO_RULES, target)
    routing = target / "routing.yaml"
    text = routing.read_text()
    old = "  - id: billing\n    when:\n      families: [billing]\n    queue: billing\n"
    assert old in text
    routing.write_text(text.replace(old, "  - id: billing\n    when:\n      families: [billing]\n    queue: general\n"))
    return target


async def summary_after(redis: Redis, namespace: str, turns: int) -> Any:
    log = ShadowLog(redis, Keys(namespace), 400)
    for _ in range(100):
        found = await log.summary(datetime.now(UTC), 2)
        if found.turns >= turns:
            return found
        await asyncio.sleep(0.05)
    return found


async def test_a_candidate_that_routes_differently_is_counted_and_never_acts(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, tmp_path: Path, redis_url: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING, rules_shadow_dir=candidate_rules(tmp_path))
    chat = await connect(http, base)
    await chat.say("where is my order #12345")  # both keep it with the bot
    disputed = await connect(http, base)  # live: billing; the candidate would have said general
    _, frame = await disputed.say_until_handoff("I want to dispute a charge on my card")
    assert frame["queue"] == "billing"  # the live rules acted, not the candidate

    summary = await summary_after(redis, namespace, 2)
    assert summary.turns == 2 and summary.disagree == 1
    assert summary.live["bot"] == 1 and summary.shadow["bot"] == 1
    data = summary.as_dict()
    assert data["by_queue"] == {"billing": {"live": 1, "shadow": 0}, "general": {"live": 0, "shadow": 1}}
    assert data["handoff_rate"] == {"live": 0.5, "shadow": 0.5}
    [sample] = data["samples"]
    assert sample["conversation_id"] == disputed.conversation_id and sample["channel"] == "webchat"
    assert sample["live"].split(">")[1] == "billing" and sample["shadow"].split(">")[1] == "general"
    text = summary.render()
    assert "1 decided differently (50.0%)" in text and "general" in text

    # The operator's view: `handoff-gateway review --shadow`, the same figures.
    code, out, err = await review_cli(redis_url, namespace, "--shadow", "--since", "2d", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["by_queue"] == data["by_queue"] and shown["disagreements"] == 1
    code, out, _ = await review_cli(redis_url, namespace, "--shadow", "--since", "2d")
    assert "Handoff rate per turn: live 50.00%, candidate 50.00%." in out and disputed.conversation_id in out


async def test_without_a_candidate_nothing_is_counted_and_an_empty_history_says_so(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    await handed_off(http, base)
    summary = await ShadowLog(redis, Keys(namespace), 400).summary(datetime.now(UTC), 30)
    assert summary.turns == 0
    assert summary.render().startswith("no shadow data for the last 30 days")


def test_a_verdict_names_what_a_review_compares() -> None:
    assert Verdict(False).label == "bot"
    assert Verdict(True, "explicit_request", "general", 2).label == "explicit_request>general>p2"
    assert Verdict(True, "explicit_request", "general", 2) != Verdict(True, "explicit_request", "general", 3)
