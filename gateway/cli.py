"""``handoff-gateway``: run the gateway and look into what it stores."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from aiohttp import web
from redis.asyncio import Redis

from gateway import rules_cli
from gateway.app import create_app
from gateway.embedded_redis import EmbeddedRedisError
from gateway.logs import configure_logging
from gateway.redis_target import redis_target
from gateway.settings import ConfigError, Settings, load_settings
from handoff.loader import load_rules
from handoff.problems import RulesError
from sessions.keys import Keys
from sessions.store import ConversationNotFound, ConversationStore


def _run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        rules = load_rules(settings.rules_dir)
    except RulesError as exc:
        print(f"handoff-gateway: the rules in {settings.rules_dir} are invalid "
              f"(`handoff-gateway rules check` lists them): {exc.problems[0]}", file=sys.stderr)
        return 2
    host = args.host or settings.host
    port = args.port or settings.port
    with redis_target(settings) as target:
        app = create_app(settings.model_copy(update={"redis_url": target.url}))
        shown = "localhost" if host in {"127.0.0.1", "0.0.0.0"} else host  # noqa: S104 - display only
        print(f"handoff-gateway on http://{shown}:{port}  (Redis: {target.description}; bot: {settings.bot}; "
              f"rules: {rules.version})", file=sys.stderr, flush=True)
        web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0


async def _conversations(
    settings: Settings, url: str, conversation_id: str | None, limit: int, jsonl: bool
) -> int:
    if jsonl:
        for recording in await rules_cli.recordings_from_redis(settings, url, limit):
            print(recording.model_dump_json())
        return 0
    redis = Redis.from_url(url)
    store = ConversationStore(redis, Keys(settings.redis_namespace), settings.conversation_ttl_seconds)
    try:
        if conversation_id is None:
            ids = await store.recent(limit)
            if not ids:
                print("no conversations")
            for cid in ids:
                try:
                    c = await store.get(cid)
                except ConversationNotFound:
                    continue
                who = c.customer.name or c.customer.external_id or c.customer.id[:8]
                print(f"{c.id}  {c.state.value:<10} {c.channel:<8} {c.updated_at:%Y-%m-%d %H:%M:%S}  {who}")
            return 0
        try:
            c = await store.get(conversation_id)
        except ConversationNotFound:
            print(f"no conversation {conversation_id}", file=sys.stderr)
            return 1
        print(f"conversation {c.id}  state={c.state.value}  channel={c.channel}  customer={c.customer.id}")
        if c.handoff is not None:
            h = c.handoff
            print(f"  handoff: {h.reason} ({h.trigger_rule}) -> {h.queue} [{h.mode}, priority {h.priority}] "
                  f"by route {h.route_rule}; rules {h.rules_version}")
        for m in await store.transcript(c.id):
            print(f"  {m.ts:%H:%M:%S} {m.sender.value:<8} {m.text}")
        return 0
    finally:
        await redis.aclose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="handoff-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve the gateway (embedded Redis when REDIS_URL is unset)")
    run.add_argument("--host", help="interface to bind (default: HOST)")
    run.add_argument("--port", type=int, help="port (default: PORT)")
    conv = sub.add_parser("conversations", help="list recent conversations, or show one transcript")
    conv.add_argument("id", nargs="?", help="conversation id to show")
    conv.add_argument("--limit", type=int, default=20)
    conv.add_argument("--jsonl", action="store_true",
                      help="export the newest conversations as JSONL, for `rules replay --from`")
    rules_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"handoff-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "run":
            return _run(settings, args)
        if args.command == "rules":
            return rules_cli.run(settings, args)
        with redis_target(settings) as target:
            return asyncio.run(_conversations(settings, target.url, args.id, args.limit, args.jsonl))
    except EmbeddedRedisError as exc:
        print(f"handoff-gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
