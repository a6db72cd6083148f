"""``handoff-gateway rules check|test|eval|replay``: what support operations run before a rule change ships.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError
from redis.asyncio import Redis

from gateway.bots.factory import build_bot
from gateway.bots.faq import KnowledgeBaseError, load_knowledge_base
from gateway.redis_target import redis_target
from gateway.settings import Settings
from handoff import eval_report
from handoff.evaluation import Report, evaluate_set
from handoff.labelled import EvalSet, load_set
from handoff.lint import lint
from handoff.loader import load_rules
from handoff.problems import RulesError
from handoff.replay import Recording, compare, render
from handoff.ruleset import RuleSet
from handoff.scenarios import run_directory
from handoff.signals import default_signal_reader
from sessions.keys import Keys
from sessions.store import ConversationNotFound, ConversationStore


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser("rules", help="check, test and replay escalation and routing rules")
    verbs = rules.add_subparsers(dest="verb", required=True)
    check = verbs.add_parser("check", help="validate a rules directory and report suspicious rules")
    check.add_argument("dir", nargs="?", type=Path, help="rules directory (default: RULES_DIR)")
    test = verbs.add_parser("test", help="run the scenario files against a rules directory")
    test.add_argument("dir", nargs="?", type=Path, help="rules directory (default: RULES_DIR)")
    test.add_argument("--scenarios", type=Path, help="scenario directory (default: DIR/scenarios)")
    test.add_argument("-v", "--verbose", action="store_true", help="print every decision")
    evaluate = verbs.add_parser("eval", help="precision and recall of the triggers on labelled messages")
    evaluate.add_argument("dir", nargs="?", type=Path, help="rules directory (default: RULES_DIR)")
    evaluate.add_argument("--set", dest="sets", type=Path, action="append",
                          help="evaluation set file (repeatable; default: every DIR/eval/*.yaml)")
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    replay = verbs.add_parser("replay", help="compare live and candidate rules on recorded conversations")
    replay.add_argument("--candidate", type=Path, required=True, help="the changed rules directory")
    replay.add_argument("--live", type=Path, help="the rules in force (default: RULES_DIR)")
    replay.add_argument("--from", dest="source", type=Path,
                        help="JSONL export (handoff-gateway conversations --jsonl); default: read Redis")
    replay.add_argument("--limit", type=int, default=1000, help="newest conversations to read from Redis")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.verb == "check":
        return _check(settings, args.dir or settings.rules_dir)
    if args.verb == "test":
        return _test(args.dir or settings.rules_dir, args.scenarios, args.verbose)
    if args.verb == "eval":
        return _eval(settings, args.dir or settings.rules_dir, args.sets, args.json)
    return _replay(settings, args)


def _load(directory: Path) -> RuleSet | None:
    try:
        return load_rules(directory)
    except RulesError as exc:
        print(f"{directory}: {len(exc.problems)} error(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  error: {problem}", file=sys.stderr)
        return None


def _known_intents(settings: Settings) -> tuple[set[str], set[str]]:
    """The FAQ bot's intents and families, so the lint can flag rules that name ones it never reports."""
    if settings.bot != "faq":
        return set(), set()
    try:
        kb = load_knowledge_base(settings.faq_knowledge_base)
    except KnowledgeBaseError:
        return set(), set()
    return {i.id for i in kb.intents}, {i.family for i in kb.intents}


def _check(settings: Settings, directory: Path) -> int:
    rules = _load(directory)
    if rules is None:
        return 1
    intents, families = _known_intents(settings)
    problems = lint(rules, intents, families)
    for problem in problems:
        print(f"  {problem.severity}: {problem}")
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    summary = (f"{directory}: version {rules.version}, {len(rules.queues.queues)} queues, "
               f"{len(rules.routing.rules)} routing rules; {errors} error(s), {warnings} warning(s)")
    print(summary, file=sys.stderr if errors else sys.stdout)
    return 1 if errors else 0


def _test(directory: Path, scenarios: Path | None, verbose: bool) -> int:
    rules = _load(directory)
    if rules is None:
        return 1
    folder = scenarios or directory / "scenarios"
    try:
        outcomes = run_directory(rules, folder, default_signal_reader(rules.meta.locales))
    except RulesError as exc:
        for problem in exc.problems:
            print(f"  error: {folder}/{problem}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(f"{'PASS' if outcome.passed else 'FAIL'}  {outcome.file}: {outcome.name}")
        for failure in outcome.failures:
            print(f"      {failure}")
        if verbose:
            for number, decision in enumerate(outcome.decisions, start=1):
                print(f"      turn {number}: {decision.action.value}: {decision.explanation}")
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed ({rules.version}, {folder})")
    if not outcomes:
        print(f"no scenarios in {folder}", file=sys.stderr)
        return 1
    return 1 if failed else 0


def _eval(settings: Settings, directory: Path, sets: list[Path] | None, as_json: bool) -> int:
    rules = _load(directory)
    if rules is None:
        return 1
    paths = sets or sorted((directory / "eval").glob("*.yaml"))
    if not paths:
        print(f"no evaluation set in {directory / 'eval'}; write one or pass --set FILE (docs/rules.md)",
              file=sys.stderr)
        return 1
    try:
        loaded = [(path, load_set(path)) for path in paths]
    except RulesError as exc:
        for problem in exc.problems:
            print(f"  error: {problem}", file=sys.stderr)
        return 1
    reports = asyncio.run(_evaluate(settings, rules, loaded))
    missed = False
    for (path, _), report in zip(loaded, reports, strict=True):
        missed = missed or bool(report.failures())
        if as_json:
            print(json.dumps(eval_report.as_json(report, str(path)), ensure_ascii=False))
        else:
            print(eval_report.render(report, str(path)))
            print()
    return 1 if missed else 0


async def _evaluate(settings: Settings, rules: RuleSet, sets: list[tuple[Path, EvalSet]]) -> list[Report]:
    """Every set through the configured bot (the FAQ bot by default): its intents count in the decisions."""
    bot = build_bot(settings)
    reader = default_signal_reader(rules.meta.locales)
    try:
        return [await evaluate_set(rules, loaded.items, bot, reader, at=loaded.at,
                                   thresholds=loaded.thresholds, part=loaded.part) for _, loaded in sets]
    finally:
        await bot.aclose()


def _read_jsonl(path: Path) -> Iterator[Recording]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield Recording.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(map(str, first["loc"]))
                raise ValueError(f"{path}:{number}: {where}: {first['msg']}") from None


async def recordings_from_redis(settings: Settings, url: str, limit: int) -> list[Recording]:
    redis = Redis.from_url(url)
    store = ConversationStore(redis, Keys(settings.redis_namespace), settings.conversation_ttl_seconds)
    recordings: list[Recording] = []
    try:
        for cid in await store.recent(limit):
            try:
                conversation = await store.get(cid)
            except ConversationNotFound:
                continue
            recordings.append(Recording(conversation=conversation, messages=await store.transcript(cid)))
    finally:
        await redis.aclose()
    return list(reversed(recordings))


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    live = _load(args.live or settings.rules_dir)
    candidate = _load(args.candidate)
    if live is None or candidate is None:
        return 1
    try:
        if args.source is not None:
            recordings = list(_read_jsonl(args.source))
        else:
            with redis_target(settings) as target:
                recordings = asyncio.run(recordings_from_redis(settings, target.url, args.limit))
    except (OSError, ValueError) as exc:
        print(f"handoff-gateway: {exc}", file=sys.stderr)
        return 1
    locales = sorted({*live.meta.locales, *candidate.meta.locales})
    print(render(compare(live, candidate, recordings, default_signal_reader(locales))))
    return 0
