"""Voice turn benchmark: callers' turns per second through the whole pipeline, against a bare handler.

Starts the real gateway (instrumented_gateway.py: the app plus a Redis round-trip counter, the demo FAQ bot
answering inside the webhook) and, in the same run, a bare aiohttp handler that parses the same form and
makes one Redis write (bare_webhook.py), each in its own process against the same Redis. Each round opens N
calls with a signed ``POST /twilio/voice``, pre-builds every turn of every call as a raw, signed HTTP request
(Twilio's Gather action: ``POST /twilio/voice/turn?c=<conversation>&n=<turn>`` with the speech and every
field Twilio sends), and replays them with ``wrk`` (voice_turns.lua): N connections, one call each, so a
call's turns are sequential as on a phone. The gateway does everything: signature, the turn stored once,
the call's state, the bot, the handoff policy, the reply stored, TwiML. Rounds alternate between the two
servers (and which goes first) over the same requests; medians are reported. Prints one JSON object.

    python tests/bench/bench_voice.py [--calls 100] [--seconds 8] [--rounds 7]

Needs ``wrk`` on PATH (Debian/Ubuntu: ``apt-get install wrk``). All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlencode

import aiohttp
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from channels.voice.calls import conversation_of_call  # noqa: E402
from gateway.embedded_redis import free_port  # noqa: E402
from sessions.keys import Keys  # noqa: E402
from sessions.store import ConversationNotFound, ConversationStore  # noqa: E402
from tests.bench.harness import commands_run, gateway_redis_counts, run_against_redis  # noqa: E402
from tests.readiness import wait_until_ready  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://gateway.example.test"
ACCOUNT = "AC" + "1" * 32
BUSINESS = "+14155550100"
IDLE_SECONDS = 4.0
START_SECONDS = 90.0
SETTLE_SECONDS = 0.5  # after wrk stops, for the turns still in flight to finish before counting
LUA = Path(__file__).with_name("voice_turns.lua")
MAX_TURN = 500  # the gateway's highest turn number (channels/voice/caller.py MAX_TURNS)
# What callers say: questions the demo FAQ bot answers (gateway/bots/kb/demo_shop.yaml), as Twilio's speech
# recognition writes them, each a different intent from the one before, so no turn counts as failed or
# repeated (gateway/rules/demo_shop/triggers.yaml) and the calls stay with the bot.
QUESTIONS = [
    "Where is my order?",
    "How much is shipping?",
    "Can I return an item?",
    "What payment methods do you accept?",
    "How long does shipping take?",
    "Do you ship abroad?",
    "I need an invoice.",
    "Change my email address.",
    "Thank you.",
]


def call_fields(sid: str, caller: str, status: str) -> dict[str, str]:
    """What Twilio posts with every request about an inbound call."""
    form = {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": sid, "CallStatus": status,
            "Direction": "inbound", "From": caller, "To": BUSINESS, "Caller": caller, "Called": BUSINESS}
    for prefix in ("From", "To", "Caller", "Called"):
        form.update({f"{prefix}Country": "US", f"{prefix}State": "CA", f"{prefix}City": "SAN FRANCISCO",
                     f"{prefix}Zip": "94105"})
    return form


def request_bytes(path: str, body: bytes, signature: str, token: str) -> bytes:
    """One webhook as Twilio sends it, headers included."""
    head = (f"POST {path} HTTP/1.1\r\nHost: gateway.example.test\r\nUser-Agent: TwilioProxy/1.1\r\n"
            f"Accept: */*\r\nCache-Control: max-age=259200\r\nX-Home-Region: us1\r\n"
            f"I-Twilio-Idempotency-Token: {token}\r\nX-Twilio-Signature: {signature}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


class Call:
    def __init__(self, index: int, caller: str) -> None:
        self.index = index
        self.sid = "CA" + uuid.uuid4().hex
        self.caller = caller
        self.cid = conversation_of_call(self.sid)
        self.fields = call_fields(self.sid, caller, "in-progress")
        self.encoded = urlencode(self.fields)

    def turn(self, n: int, validator: RequestValidator) -> bytes:
        """Turn ``n``'s Gather action: what the caller said, with Twilio's confidence in it."""
        said = {"SpeechResult": QUESTIONS[(self.index + n) % len(QUESTIONS)],
                "Confidence": f"0.9{(self.index * 7 + n) % 100:02d}1234"}
        path = f"/twilio/voice/turn?c={self.cid}&n={n}"
        body = f"{self.encoded}&{urlencode(said)}".encode()
        signature = validator.compute_signature(PUBLIC + path, {**self.fields, **said})
        return request_bytes(path, body, signature, f"{self.sid}-turn-{n}")

    def write_turns(self, path: Path, turns: int, validator: RequestValidator) -> None:
        with path.open("wb") as out:
            for n in range(1, turns + 1):
                request = self.turn(n, validator)
                out.write(b"%d\n" % len(request))
                out.write(request)


async def open_call(http: aiohttp.ClientSession, base: str, call: Call, validator: RequestValidator) -> None:
    """The call's first webhook (the number's Voice URL): the conversation and the greeting's Gather."""
    form = call_fields(call.sid, call.caller, "ringing")
    signature = validator.compute_signature(f"{PUBLIC}/twilio/voice", form)
    async with http.post(f"{base}/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}) as r:
        text = await r.text()
        assert r.status == 200 and "<Gather" in text, (r.status, text)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu_seconds(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_wrk(base: str, calls: int, seconds: int, turns_dir: Path) -> tuple[dict[str, Any], float]:
    """wrk over the pre-built turns: its summary (voice_turns.lua's done()) and the CPU seconds it used."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            ["wrk", "-t", str(calls), "-c", str(calls), "-d", f"{seconds}s", "--timeout", "10s", "-s", str(LUA),
             f"{base}/", "--", str(turns_dir)], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        printed = out.read().decode(errors="replace")
    line = next((x for x in printed.splitlines() if x.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed (exit {process.returncode}):\n{printed}")
    return json.loads(line.removeprefix("BENCH ")), usage.ru_utime + usage.ru_stime


class Target:
    """One server under test: where it listens, its process (for CPU time), and whether it counts trips."""

    def __init__(self, name: str, base: str, pid: int, redis: Redis, *, counting: bool) -> None:
        self.name = name
        self.base = base
        self.pid = pid
        self.redis = redis
        self.counting = counting  # the gateway: count its Redis round trips, steps and commands
        self.idle = {"round_trips": 0.0, "steps": 0.0, "commands": 0.0}

    async def prepare(self, http: aiohttp.ClientSession, validator: RequestValidator) -> None:
        # Start-up (rules, models, the bot) takes longer than the tests' 10 s on a machine other work loads.
        if not await wait_until_ready(http, self.base, START_SECONDS):
            raise SystemExit(f"{self.name} at {self.base} did not become ready")
        # One call and one turn, outside the measurement: loads the scripts, and checks the answer.
        call = Call(0, "+14155550999")
        if self.counting:
            await open_call(http, self.base, call, validator)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(self.base.rsplit(":", 1)[1]))
        writer.write(call.turn(1, validator))
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(next(h.split(":")[1] for h in head.split("\r\n") if h.lower().startswith("content-length")))
        body = (await reader.readexactly(length)).decode()
        writer.close()
        if " 200 " not in head.split("\r\n")[0] or "<Gather" not in body:
            raise SystemExit(f"{self.name} answered a turn with {head.splitlines()[0]!r}: {body[:300]}")
        if self.counting:
            # The desk's clockwork (offers, queue updates, jobs) talks to Redis in the background; measure
            # its rate while idle and take it out of the per-turn counts.
            before, commands = await gateway_redis_counts(http, self.base), await commands_run(self.redis)
            await asyncio.sleep(IDLE_SECONDS)
            after = await gateway_redis_counts(http, self.base)
            self.idle = {"round_trips": (after["round_trips"] - before["round_trips"]) / IDLE_SECONDS,
                         "steps": (after["steps"] - before["steps"]) / IDLE_SECONDS,
                         "commands": (await commands_run(self.redis) - commands) / IDLE_SECONDS}

    async def round(self, http: aiohttp.ClientSession, calls: int, seconds: int, turns_dir: Path) -> dict[str, Any]:
        zero = {"round_trips": 0, "steps": 0}
        before = await gateway_redis_counts(http, self.base) if self.counting else zero
        commands_before = await commands_run(self.redis)
        redis_cpu_before = await redis_cpu_seconds(self.redis)
        cpu_before, started = cpu_seconds(self.pid), time.perf_counter()
        summary, wrk_cpu = await asyncio.to_thread(run_wrk, self.base, calls, seconds, turns_dir)
        cpu, wall = cpu_seconds(self.pid) - cpu_before, time.perf_counter() - started
        redis_cpu = await redis_cpu_seconds(self.redis) - redis_cpu_before
        await asyncio.sleep(SETTLE_SECONDS)
        after = await gateway_redis_counts(http, self.base) if self.counting else zero
        commands = await commands_run(self.redis) - commands_before
        counted = wall + SETTLE_SECONDS
        # Every request wrk sent was handled (those in flight when it stopped too); wrk asks for one more
        # than it sends, on its first thread before the run, to check the script.
        handled = summary["issued"] - 1
        answered = summary["requests"]
        errors = summary["errors"]
        return {
            "per_second": answered / (summary["duration_us"] / 1e6),
            "answered": answered,
            "handled": handled,
            "wrapped": summary["wrapped"],
            "most": summary["most"],
            "errors": errors["connect"] + errors["read"] + errors["write"] + errors["status"] + errors["timeout"],
            "p50_ms": summary["latency_us"]["p50"] / 1000,
            "p99_ms": summary["latency_us"]["p99"] / 1000,
            "cpu_ms": cpu * 1000 / answered,
            "cpu_share": cpu / wall,
            "wrk_cpu_share": wrk_cpu / wall,
            "wrk_cpu_us": wrk_cpu * 1e6 / answered,
            "redis_cpu_share": redis_cpu / wall,
            "round_trips": (after["round_trips"] - before["round_trips"] - self.idle["round_trips"] * counted)
            / handled,
            "steps": (after["steps"] - before["steps"] - self.idle["steps"] * counted) / handled,
            "commands": (commands - self.idle["commands"] * counted) / handled,
        }


def start(script: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "tests/bench" / script), str(port)], env=env, cwd=ROOT)


async def compare(gateway: Target, bare: Target, args: argparse.Namespace,
                  tmp: Path) -> tuple[dict[str, list[dict[str, Any]]], list[Call], float]:
    """Rounds alternate between the two servers over the same requests, and which goes first, so a slow
    spell of a shared machine hits both alike. Each round opens new calls."""
    rounds: dict[str, list[dict[str, Any]]] = {"gateway": [], "bare": []}
    opened: list[Call] = []
    validator = RequestValidator(TOKEN)
    building = 0.0
    turns = args.turns
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for target in (gateway, bare):
            await target.prepare(http, validator)
        for index in range(args.rounds):
            calls = [Call(i, f"+1415{100_000 + index * args.calls + i:07d}") for i in range(args.calls)]
            await asyncio.gather(*(open_call(http, gateway.base, call, validator) for call in calls))
            opened.extend(calls)
            turns_dir = tmp / f"round{index}"
            turns_dir.mkdir()
            began = time.perf_counter()
            for call in calls:
                call.write_turns(turns_dir / f"{call.index}.req", turns, validator)
            building += time.perf_counter() - began
            order = (gateway, bare) if index % 2 == 0 else (bare, gateway)
            for target in order:
                rounds[target.name].append(await target.round(http, args.calls, args.seconds, turns_dir))
            shutil.rmtree(turns_dir)
            # A call's turns must not run out on the gateway (a repeated turn is a retry, not the hot path):
            # later rounds build half as many again as the busiest call has needed so far.
            turns = min(MAX_TURN - 1, max(turns, rounds["gateway"][-1]["most"] * 3 // 2))
    return rounds, opened, building


async def states_of(redis: Redis, namespace: str, calls: list[Call]) -> dict[str, int]:
    store = ConversationStore(redis, Keys(namespace), 60)
    states: Counter[str] = Counter()
    for call in calls:
        try:
            states[(await store.get(call.cid)).state.value] += 1
        except ConversationNotFound:
            states["missing"] += 1
    return dict(states.most_common())


def med(rounds: list[dict[str, Any]], field: str, digits: int) -> float:
    return round(median(r[field] for r in rounds), digits)


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace, "LOG_LEVEL": "warning",
           "LOG_FORMAT": "json", "PUBLIC_URL": PUBLIC, "TWILIO_AUTH_TOKEN": TOKEN, "TWILIO_ACCOUNT_SID": ACCOUNT,
           "TWILIO_SMS_FROM": BUSINESS, "TWILIO_VOICE_FROM": BUSINESS,
           "TWILIO_API_BASE_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens: no REST call expected
    gateway_port, bare_port = free_port(), free_port()
    gateway, bare = start("instrumented_gateway.py", gateway_port, env), start("bare_webhook.py", bare_port, env)
    redis = Redis.from_url(redis_url)
    gateway_target = Target("gateway", f"http://127.0.0.1:{gateway_port}", gateway.pid, redis, counting=True)
    bare_target = Target("bare", f"http://127.0.0.1:{bare_port}", bare.pid, redis, counting=False)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_voice") as tmp:
            rounds, calls, building = await compare(gateway_target, bare_target, args, Path(tmp))
        states = await states_of(redis, namespace, calls)
    finally:
        await redis.aclose()
        for process in (gateway, bare):
            process.terminate()
            process.wait(20)
    full, baseline = rounds["gateway"], rounds["bare"]
    ratios = [g["per_second"] / b["per_second"] for g, b in zip(full, baseline, strict=True)]
    return {
        "benchmark": "voice_turns",
        "calls": args.calls,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "turns_prebuilt_per_call": args.turns,  # at first; more in later rounds if a call came close
        "gateway_turns_per_second": med(full, "per_second", 1),
        "bare_handler_turns_per_second": med(baseline, "per_second", 1),
        "ratio": round(median(ratios), 3),
        "target_ratio": 0.5,
        "ratio_per_round": [round(r, 3) for r in ratios],
        "gateway_per_round": [round(g["per_second"]) for g in full],
        "bare_per_round": [round(b["per_second"]) for b in baseline],
        "gateway_p99_ms": med(full, "p99_ms", 1),
        "bare_handler_p99_ms": med(baseline, "p99_ms", 1),
        "gateway_p50_ms": med(full, "p50_ms", 1),
        "bare_handler_p50_ms": med(baseline, "p50_ms", 1),
        "gateway_cpu_ms_per_turn": med(full, "cpu_ms", 3),
        "bare_handler_cpu_ms_per_turn": med(baseline, "cpu_ms", 3),
        "gateway_cpu_share": med(full, "cpu_share", 2),
        "bare_handler_cpu_share": med(baseline, "cpu_share", 2),
        "bare_handler_cpu_share_per_round": [round(b["cpu_share"], 2) for b in baseline],
        "wrk_cpu_share_against_gateway": med(full, "wrk_cpu_share", 2),
        "wrk_cpu_share_against_bare": med(baseline, "wrk_cpu_share", 2),
        "wrk_cpu_us_per_turn": med(baseline, "wrk_cpu_us", 1),
        "redis_cpu_share_gateway": med(full, "redis_cpu_share", 2),
        "redis_cpu_share_bare": med(baseline, "redis_cpu_share", 2),
        "redis_steps_per_turn": med(full, "steps", 2),
        "redis_round_trips_per_turn": med(full, "round_trips", 2),
        "redis_commands_per_turn": med(full, "commands", 2),
        "desk_background_round_trips_per_second": round(gateway_target.idle["round_trips"], 1),
        "gateway_turns_per_call_per_round": round(median(g["handled"] for g in full) / args.calls, 1),
        "gateway_turns_wrapped": sum(g["wrapped"] for g in full),  # must be 0: a repeated turn is a retry
        "bare_turns_wrapped": sum(b["wrapped"] for b in baseline),
        "errors": {"gateway": sum(g["errors"] for g in full), "bare": sum(b["errors"] for b in baseline)},
        "call_states_at_end": states,
        "seconds_building_requests": round(building, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="concurrent calls (wrk threads and connections)")
    parser.add_argument("--seconds", type=int, default=8, help="wrk's duration per server per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians are reported")
    parser.add_argument("--turns", type=int, default=200,
                        help="turns pre-built per call in the first round (later rounds: as many as needed)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench_voice.py needs wrk (https://github.com/wg/wrk) on PATH: "
                         "apt-get install wrk, or brew install wrk")
    if not 1 <= args.turns < MAX_TURN:
        raise SystemExit(f"--turns must be between 1 and {MAX_TURN - 1} (the gateway's last turn number)")
    print(json.dumps(run_against_redis(lambda url: run(args, url)), indent=2))


if __name__ == "__main__":
    main()
