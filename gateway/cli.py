"""``handoff-gateway``: run the gateway and look into what it stores."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
from collections.abc import Sequence
from pathlib import Path

from redis.asyncio import Redis

from channels.twilio.forms import FormError, e164
from gateway import review_cli, rules_cli
from gateway.app import create_app
from gateway.demo_twilio import DEMO_ACCOUNT_SID, DEMO_API_PORT, DEMO_AUTH_TOKEN, DEMO_VOICE_FROM
from gateway.embedded_redis import EmbeddedRedisError
from gateway.gc_tuning import tune_garbage_collection
from gateway.logs import configure_logging
from gateway.redis_target import redis_target
from gateway.serve import serve
from gateway.settings import ConfigError, Settings, load_settings
from gateway.simulator import Simulator
from gateway.simulator import run as simulator_run
from gateway.twilio_voice_emulator import VoiceEmulator
from gateway.voice_simulator_cli import run_interactive
from handoff.agents import AgentStore
from handoff.desk import Desk
from handoff.loader import load_rules
from handoff.offers import Dispatcher
from handoff.problems import RulesError
from handoff.queues import QueueStore
from handoff.ruleset import RuleSet
from sessions.keys import Keys
from sessions.store import ConversationNotFound, ConversationStore


def _on_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to any interface


def _valid_rules(directory: Path) -> RuleSet | None:
    try:
        return load_rules(directory)
    except RulesError as exc:
        print(f"handoff-gateway: the rules in {directory} are invalid "
              f"(`handoff-gateway rules check {directory}` lists them): {exc.problems[0]}", file=sys.stderr)
        return None


def _run(settings: Settings, args: argparse.Namespace) -> int:
    host = args.host or settings.host
    port = args.port or settings.port
    token = settings.twilio_auth_token
    if token is not None and token.get_secret_value() == DEMO_AUTH_TOKEN and not _on_loopback(host):
        who = "DEMO_TWILIO=1" if settings.demo_twilio else "TWILIO_AUTH_TOKEN (the simulator's demo token)"
        print(f"handoff-gateway: {who} signs Twilio webhooks with a published token, so it only listens on "
              f"loopback, not {host}; set HOST=127.0.0.1, or set TWILIO_AUTH_TOKEN and PUBLIC_URL for a real "
              "Twilio account", file=sys.stderr)
        return 2
    rules = _valid_rules(settings.rules_dir)
    shadow = _valid_rules(settings.rules_shadow_dir) if settings.rules_shadow_dir is not None else None
    if rules is None or (settings.rules_shadow_dir is not None and shadow is None):
        return 2
    with redis_target(settings, supervise=True) as target:
        app = create_app(settings.model_copy(update={"redis_url": target.url}))
        app.on_startup.append(tune_garbage_collection)
        shown = "localhost" if host in {"127.0.0.1", "0.0.0.0"} else host  # noqa: S104 - display only
        print(f"handoff-gateway on http://{shown}:{port}  (Redis: {target.description}; bot: {settings.bot}; "
              f"rules: {rules.version})", file=sys.stderr, flush=True)
        if settings.demo_twilio and settings.twilio_auth_token is not None:
            print("Text it as a phone user, in another terminal: .venv/bin/handoff-gateway simulate sms "
                  "--from +15551234567   (or: simulate whatsapp ...)\n"
                  "Call it, and answer the agents' phones too: .venv/bin/handoff-gateway simulate voice "
                  "--from +15551234567   (agents get a number with: agents add NAME --phone +15550001111)",
                  file=sys.stderr, flush=True)
        asyncio.run(serve(app, settings, host, port))
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


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    url = args.url or f"http://localhost:{settings.port}"
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else DEMO_AUTH_TOKEN
    public = str(settings.public_url) if settings.public_url else url
    try:
        number = e164(args.number)
    except FormError as exc:
        print(f"handoff-gateway: --from: {exc.detail}", file=sys.stderr)
        return 2
    if args.channel == "voice":
        account = settings.twilio_account_sid or DEMO_ACCOUNT_SID
        # A tenth of real time: prompts and hold audio pass quickly; a typed line waits for the prompt to end.
        emulator = VoiceEmulator(url, public, token, account, args.api_port, time_scale=0.1)
        business = settings.twilio_voice_from or DEMO_VOICE_FROM
        return asyncio.run(run_interactive(emulator, number, to_number=business, stay=args.stay))
    account = settings.twilio_account_sid or DEMO_ACCOUNT_SID
    simulator = Simulator(url, public, token, channel=args.channel, number=number, api_port=args.api_port,
                          account_sid=account)
    return asyncio.run(simulator_run(simulator))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


async def _agents(settings: Settings, url: str, args: argparse.Namespace) -> int:
    redis = Redis.from_url(url)
    store = AgentStore(redis, Keys(settings.redis_namespace))
    try:
        if args.verb == "add":
            if await store.find(args.name):
                print(f"handoff-gateway: an agent named {args.name!r} exists", file=sys.stderr)
                return 1
            try:
                phone = e164(args.phone) if args.phone else None
            except ValueError as exc:
                print(f"handoff-gateway: --phone: {exc}", file=sys.stderr)
                return 2
            agent, token = await store.add(args.name, _split(args.skills), _split(args.languages),
                                           _split(args.queues), phone, supervisor=args.supervisor)
            print(f"agent {agent.name} (id {agent.id}) created. API token, shown only now:")
            print(token)
            return 0
        if args.verb == "list":
            agents = await store.all()
            states = await store.states([a.id for a in agents])
            if not agents:
                print("no agents")
            for agent in agents:
                state = states[agent.id]
                load = f"{state.active}/{state.capacity}"
                print(f"{agent.id}  {agent.name:<20} {state.status.value:<8} {load}  "
                      f"skills={','.join(agent.skills) or '-'} languages={','.join(agent.languages) or '-'} "
                      f"queues={','.join(agent.queues) or 'any'} phone={agent.phone or '-'}"
                      + (" supervisor" if agent.supervisor else ""))
            return 0
        found = await store.find(args.agent)
        if found is None:
            print(f"handoff-gateway: no agent {args.agent!r}", file=sys.stderr)
            return 1
        await store.remove(found)
        # Their conversations and offers go back to the queues, as when an agent goes offline.
        keys = Keys(settings.redis_namespace)
        conversations = ConversationStore(redis, keys, settings.conversation_ttl_seconds)
        desk = Desk(redis=redis, keys=keys, store=conversations, agents=store, queues=QueueStore(redis, keys))
        await Dispatcher(desk, settings.offer_timeout_seconds).withdraw_offers_to(found.id)
        returned = await desk.hand_back(found.id, "the agent was removed", load_rules(settings.rules_dir))
        print(f"agent {found.name} removed; {len(returned)} conversation(s) back in their queues")
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
    review_cli.add_parser(sub)
    simulate = sub.add_parser("simulate", help="text or call a running gateway as a phone user (no Twilio "
                                               "account); on a call you also answer the agents' phones")
    simulate.add_argument("channel", choices=["sms", "whatsapp", "voice"])
    simulate.add_argument("--from", dest="number", required=True, help="your phone number, e.g. +15551234567")
    simulate.add_argument("--url", help="the gateway (default: http://localhost:PORT)")
    simulate.add_argument("--stay", action="store_true",
                          help="voice: keep answering phones after the call, until Ctrl-D (for callbacks)")
    simulate.add_argument("--api-port", type=int, default=DEMO_API_PORT,
                          help=f"where the stand-in for Twilio's API listens (default {DEMO_API_PORT})")
    agents = sub.add_parser("agents", help="add, list and remove agents of the desk")
    verbs = agents.add_subparsers(dest="verb", required=True)
    add = verbs.add_parser("add", help="create an agent and print their API token (shown once)")
    add.add_argument("name")
    add.add_argument("--skills", default="", help="comma-separated, e.g. billing,vip")
    add.add_argument("--languages", default="", help="comma-separated ISO codes, e.g. en,de")
    add.add_argument("--queues", default="",
                     help="comma-separated queue ids (default: every queue they have the skills for)")
    add.add_argument("--phone", default="",
                     help="E.164 number the desk calls them on for phone conversations, e.g. +15551230000")
    add.add_argument("--supervisor", action="store_true",
                     help="also sees the review dashboard (/review) and its figures")
    verbs.add_parser("list", help="list agents with their presence")
    remove = verbs.add_parser("remove", help="remove an agent (by name or id); their token stops working")
    remove.add_argument("agent")
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
        if args.command == "review":
            return review_cli.run(settings, args)
        if args.command == "simulate":
            return _simulate(settings, args)
        if args.command == "agents":
            with redis_target(settings) as target:
                return asyncio.run(_agents(settings, target.url, args))
        with redis_target(settings) as target:
            return asyncio.run(_conversations(settings, target.url, args.id, args.limit, args.jsonl))
    except EmbeddedRedisError as exc:
        print(f"handoff-gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
