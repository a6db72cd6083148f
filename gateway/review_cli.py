"""``handoff-gateway review [--since 30d] [--by DIM] [--json]`` and ``review export --since 30d``.

The review reads day counters only (a 30-day review is one pipeline of 30 hashes, plus the 14 days the
week-over-week signals compare); the export streams the raw records of the same days as JSONL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from gateway.demo_twilio import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_SMS_FROM, DEMO_VOICE_FROM
from gateway.redis_target import redis_target
from gateway.review_demo import Target, play
from gateway.settings import Settings
from handoff.agents import AgentStore
from handoff.loader import load_rules
from handoff.problems import RulesError
from handoff.review.buckets import DIMENSIONS, Totals
from handoff.review.recorder import ReviewRecorder, days_back, team_zone
from handoff.review.report import reached_queues, review
from handoff.review.text import render
from handoff.ruleset import RuleSet
from handoff.shadow import ShadowLog
from sessions.keys import Keys
from sessions.models import utcnow

_SINCE = re.compile(r"^(\d{1,4})([dw])$")
WEEK = 7


class SinceError(ValueError):
    pass


def parse_since(text: str, retention_days: int) -> int:
    """``30d`` or ``4w`` as a number of days, within what is kept."""
    found = _SINCE.match(text.strip())
    if found is None:
        raise SinceError(f"--since: expected days or weeks such as 30d or 4w, got {text!r}")
    days = int(found.group(1)) * (WEEK if found.group(2) == "w" else 1)
    if not 1 <= days <= retention_days:
        raise SinceError(f"--since: between 1d and {retention_days}d (REVIEW_RETENTION_DAYS), got {text!r}")
    return days


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("review", help="the review checklist from recorded outcomes (docs/review.md)")
    parser.add_argument("--since", default="30d", help="how far back, in days or weeks (default 30d)")
    parser.add_argument("--by", choices=DIMENSIONS, help="only this breakdown of the escalation figures")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--shadow", action="store_true",
                        help="how the RULES_SHADOW_DIR candidate would have changed the handoffs")
    verbs = parser.add_subparsers(dest="verb")
    export = verbs.add_parser("export", help="write the raw outcome records as JSONL to stdout")
    export.add_argument("--since", default="30d", help="how far back, in days or weeks (default 30d)")
    demo = verbs.add_parser("demo", help="customers and agents played through a running gateway")
    demo.add_argument("--conversations", type=int, default=20000, help="how many (default 20000)")
    demo.add_argument("--url", help="the running gateway (default: http://localhost:PORT)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        days = parse_since(args.since, settings.review_retention_days)
    except SinceError as exc:
        print(f"handoff-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        rules: RuleSet | None = load_rules(settings.rules_dir)
    except RulesError as exc:  # the review still runs, in UTC and without the routing gaps
        print(f"handoff-gateway: the rules in {settings.rules_dir} are invalid ({exc.problems[0]}): days are "
              "counted in UTC and routing gaps are left out", file=sys.stderr)
        rules = None
    if args.verb == "demo":
        return _demo(settings, args)
    with redis_target(settings) as target:
        if args.shadow and args.verb != "export":
            return asyncio.run(show_shadow(settings, target.url, days, as_json=args.json))
        if args.verb == "export":
            return asyncio.run(export(settings, target.url, days, rules))
        return asyncio.run(show(settings, target.url, days, rules, by=args.by, as_json=args.json))


def _recorder(settings: Settings, redis: Redis, rules: RuleSet | None) -> ReviewRecorder:
    zone = team_zone(rules) if rules is not None else ZoneInfo("UTC")
    version = rules.version if rules is not None else ""
    return ReviewRecorder(redis, Keys(settings.redis_namespace), lambda: (zone, version),
                          retention_days=settings.review_retention_days,
                          idle_seconds=settings.review_idle_minutes * 60)


async def export(settings: Settings, url: str, days: int, rules: RuleSet | None) -> int:
    redis = Redis.from_url(url)
    try:
        recorder = _recorder(settings, redis, rules)
        zone, _ = recorder.team()
        async for record in recorder.records(days_back(utcnow().astimezone(zone).date(), days)):
            sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
        return 0
    finally:
        await redis.aclose()


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    if not 1 <= args.conversations <= 1_000_000:
        print("handoff-gateway: --conversations: between 1 and 1000000", file=sys.stderr)
        return 2
    url = (args.url or f"http://localhost:{settings.port}").rstrip("/")
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else DEMO_AUTH_TOKEN
    public = str(settings.public_url or url).rstrip("/")
    api = urlsplit(str(settings.twilio_api_base_url))
    local = api.hostname in ("127.0.0.1", "localhost", "::1")
    target = Target(url, public, token, settings.twilio_sms_from or DEMO_SMS_FROM,
                    settings.twilio_account_sid or DEMO_ACCOUNT_SID, api.port if local else None,
                    settings.twilio_voice_from or DEMO_VOICE_FROM)
    with redis_target(settings) as redis:
        return asyncio.run(play(target, redis.url, settings.redis_namespace, args.conversations))


async def show_shadow(settings: Settings, url: str, days: int, *, as_json: bool) -> int:
    """The live rules against the candidate over the same turns (handoff/shadow.py), from day counts."""
    redis = Redis.from_url(url)
    try:
        summary = await ShadowLog(redis, Keys(settings.redis_namespace),
                                  settings.review_retention_days).summary(utcnow(), days)
    finally:
        await redis.aclose()
    print(json.dumps(summary.as_dict(), indent=2) if as_json else summary.render())
    return 0


async def _serves(redis: Redis, settings: Settings, rules: RuleSet) -> dict[str, bool]:
    """For each queue some rule reaches: does any registered agent serve it (queue and its skills)?"""
    agents = await AgentStore(redis, Keys(settings.redis_namespace)).all()
    return {q: any(a.serves(q, list(rules.queue(q).skills)) for a in agents)
            for q in reached_queues(rules) if q in rules.queues.queues}


async def show(
    settings: Settings, url: str, days: int, rules: RuleSet | None, *, by: str | None, as_json: bool
) -> int:
    redis = Redis.from_url(url)
    try:
        recorder = _recorder(settings, redis, rules)
        zone, _ = recorder.team()
        today = utcnow().astimezone(zone).date()
        span = days_back(today, max(days, 2 * WEEK))
        counters = await recorder.day_counters(span)
        window = Totals(counters[-days:])
        period = {"since_days": days, "from": span[-days].isoformat(), "to": today.isoformat(),
                  "time_zone": str(zone)}
        if not window:
            if as_json:
                print(json.dumps({**period, "no_data": True}))
            else:
                print(f"no data for the last {days} days ({period['from']} to {period['to']}, {zone}): "
                      "nothing has been recorded yet")
            return 0
        serves = await _serves(redis, settings, rules) if rules is not None else None
        figures = review(window, Totals(counters[-WEEK:]), Totals(counters[-2 * WEEK:-WEEK]),
                         breakdowns=[by] if by else DIMENSIONS, rules=rules, serves=serves)
        if as_json:
            print(json.dumps({**period, **figures}, indent=2))
        else:
            title = f"Review of the last {days} days ({period['from']} to {period['to']}, {zone})"
            print(render(figures, title))
        return 0
    finally:
        await redis.aclose()
