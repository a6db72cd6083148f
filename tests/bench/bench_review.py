"""Review benchmark: `review --since 30d` over the day counters of 1,000,000 recorded conversations.

Generates the records (seeded: 40 intents, 4 channels, 6 locales, 24 hours, 9 queues, 8 triggers, 3 rules
versions, waits, context ratings, transfers, repeat contact) over 30 team-local days, sums what each adds to
its day with the recorder's own ``increments`` (identical records are summed once and multiplied: the counters
are exactly those the records would write), writes them through ``ReviewRecorder.add_counters``, then times the
real command's work (``gateway.review_cli.show``: read the days, sum, figure, render) against REDIS_URL or a
throwaway embedded Redis. Memory: peak traced Python allocation during one review (tracemalloc, a separate run,
since tracing slows it) and the process's peak RSS. Prints one JSON object.

    python tests/bench/bench_review.py [--conversations 1000000] [--days 30] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway.review_cli import show  # noqa: E402
from gateway.settings import DEMO_RULES, Settings  # noqa: E402
from handoff.loader import load_rules  # noqa: E402
from handoff.review.buckets import increments  # noqa: E402
from handoff.review.record import Outcome, OutcomeRecord, RecordKind, Transfer  # noqa: E402
from handoff.review.recorder import ReviewRecorder, days_back, team_zone  # noqa: E402
from sessions.keys import Keys  # noqa: E402

INTENTS = [f"intent_{n:02d}" for n in range(40)]
CHANNELS = ["webchat", "sms", "whatsapp", "voice"]
LOCALES = ["en", "de", "es", "fr", "it", "nl"]
QUEUES = ["general", "billing", "billing_vip", "accounts", "trust_safety", "support_de", "support_es",
          "partner_overflow", "callbacks"]
TRIGGERS = ["explicit_request", "failed_turns", "high_risk_intent", "low_confidence", "negative_sentiment",
            "approval_required", "unsupported_workflow", "repeat_contact"]
VERSIONS = ["2026-11-01.1+aaaa", "2026-11-15.1+bbbb", "2026-11-30.1+cccc"]
WAITS = [5.0, 15.0, 25.0, 40.0, 55.0, 80.0, 110.0, 150.0, 250.0, 400.0, 550.0, 800.0, 1500.0, 4000.0]


def templates(count: int, days: list[str], seed: int = 7) -> Counter[tuple[Any, ...]]:
    """How many conversations of each shape: (day, kind of conversation, dimensions...)."""
    rng = random.Random(seed)
    shapes: Counter[tuple[Any, ...]] = Counter()
    for _ in range(count):
        day = rng.choice(days)
        escalated = rng.random() < 0.3
        shape: tuple[Any, ...] = (
            day, escalated, rng.choice(INTENTS), rng.choice(CHANNELS), rng.choice(LOCALES), rng.randrange(24),
            rng.choice(QUEUES) if escalated else None, rng.choice(TRIGGERS) if escalated else None,
            rng.choice(VERSIONS), rng.choice(WAITS) if escalated else None, rng.random() < 0.1,
            rng.choice((True, False, None)), rng.random() < 0.05, rng.random() < 0.08,
        )
        shapes[shape] += 1
    return shapes


def records_of(shape: tuple[Any, ...]) -> list[OutcomeRecord]:
    day, escalated, intent, channel, locale, hour, queue, trigger, version, wait, left, ctx, moved, repeat = shape
    at = datetime.fromisoformat(f"{day}T12:00:00+00:00")
    common: dict[str, Any] = {
        "conversation_id": "c", "customer_id": "cu", "at": at, "started_at": at, "day": day, "hour": hour,
        "weekday": at.weekday(), "channel": channel, "locale": locale, "intent": intent, "rules_version": version,
        "bot_turns": 3, "previous_outcome": Outcome.CONTAINED if repeat else None,
    }
    if not escalated:
        outcome = Outcome.LEFT_AFTER_FAILURE if left else Outcome.CONTAINED
        return [OutcomeRecord(kind=RecordKind.END, outcome=outcome, **common)]
    handoff = {**common, "trigger": trigger, "trigger_rule": f"{trigger}.r", "mode": "live", "first_queue": queue,
               "final_queue": queue, "previous_outcome": None}
    abandoned = left
    end = {
        **handoff, "previous_outcome": common["previous_outcome"], "to_agent": None if abandoned else wait,
        "handle": None if abandoned else 420.0, "told_wait": 60.0, "real_wait": wait,
        "abandoned_waiting": abandoned, "context_sufficient": None if abandoned else ctx,
        "transfers": [Transfer(from_queue=queue, to_queue="general")] if moved else [],
    }
    return [OutcomeRecord(kind=RecordKind.HANDOFF, outcome=Outcome.ESCALATED, **handoff),
            OutcomeRecord(kind=RecordKind.END, outcome=Outcome.ABANDONED if abandoned else Outcome.RESOLVED,
                          **end)]


async def fill(recorder: ReviewRecorder, shapes: Counter[tuple[Any, ...]]) -> int:
    per_day: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for shape, n in shapes.items():
        for record in records_of(shape):
            counters = per_day[record.day]
            for name, amount in increments(record).items():
                counters[name] += amount * n
    for day, counters in per_day.items():
        await recorder.add_counters(datetime.fromisoformat(day).date(), counters)
    return max(len(c) for c in per_day.values())


async def review_once(settings: Settings, url: str, days: int) -> float:
    rules = load_rules(DEMO_RULES)
    sink = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        code = await show(settings, url, days, rules, by=None, as_json=True)
    elapsed = time.perf_counter() - started
    assert code == 0 and "escalation" in json.loads(sink.getvalue())
    return elapsed


async def whole_command(url: str, namespace: str, days: int) -> dict[str, Any]:
    """The command as an operator runs it, in its own process: start-up and loading the rules included."""
    environment = {**os.environ, "REDIS_URL": url, "REDIS_NAMESPACE": namespace, "LOG_FORMAT": "json"}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "review", "--since", f"{days}d", "--json", env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT)
    out, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    assert process.returncode == 0 and "escalation" in json.loads(out)
    return {"command_wall_seconds": round(elapsed, 2)}


async def main(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    settings = Settings(_env_file=None, redis_url=url, redis_namespace=namespace)  # type: ignore[call-arg]
    redis = aioredis.Redis.from_url(url)
    rules = load_rules(DEMO_RULES)
    zone = team_zone(rules)
    recorder = ReviewRecorder(redis, Keys(namespace), lambda: (zone, rules.version), retention_days=400,
                              idle_seconds=1800)
    try:
        today = datetime.now(UTC).astimezone(zone).date()
        days = [d.isoformat() for d in days_back(today, args.days)]
        started = time.perf_counter()
        shapes = templates(args.conversations, days)
        fields = await fill(recorder, shapes)
        filled = time.perf_counter() - started
        await review_once(settings, url, args.days)  # warm: imports, scripts, connections
        timings = [await review_once(settings, url, args.days) for _ in range(args.runs)]
        tracemalloc.start()
        await review_once(settings, url, args.days)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        command = await whole_command(url, namespace, args.days)
        return {
            "bench": "review", "conversations": args.conversations, "days": args.days,
            "distinct_shapes": len(shapes), "fields_per_day_max": fields, "fill_seconds": round(filled, 1),
            "review_seconds_median": round(statistics.median(timings), 3),
            "review_seconds_max": round(max(timings), 3), "runs": args.runs,
            "review_peak_traced_mib": round(peak / 2**20, 1), "process_peak_rss_mib": round(rss / 1024, 1),
            "target_seconds": 2.0, "within_target": max(timings) < 2.0, **command,
        }
    finally:
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    if os.environ.get("REDIS_URL"):
        result = asyncio.run(main(arguments, os.environ["REDIS_URL"]))
    else:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), persistent=False) as server:
            result = asyncio.run(main(arguments, server.url))
    print(json.dumps(result))
