"""SMS webhook benchmark: inbound messages per second through the whole pipeline, against a bare handler.

Starts the real gateway (instrumented_gateway.py: the app plus a Redis round-trip counter) and, in the same
run, a bare aiohttp handler that parses the same form and makes one Redis write (bare_webhook.py), each in
its own process against the same Redis. Then posts correctly signed Twilio webhooks, every form field Twilio
sends included: N numbers, each texting M times one after another, all numbers at once. The gateway does
everything: signature, dedupe, conversation, transcript, bot, TwiML reply. Prints one JSON object.

    python tests/bench/bench_sms.py [--numbers 100] [--messages 10] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import free_port  # noqa: E402
from tests.bench.harness import commands_run, gateway_redis_counts, run_against_redis  # noqa: E402
from tests.readiness import wait_until_ready  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://gateway.example.test"
IDLE_SECONDS = 4.0
QUESTIONS = ["where is my order", "how much is shipping", "can I return an item", "thanks"]


def form(number: str, body: str) -> dict[str, str]:
    sid = "SM" + uuid.uuid4().hex
    return {"ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "SF",
            "FromZip": "94105", "SmsSid": sid, "FromState": "CA", "SmsStatus": "received", "FromCity": "SF",
            "Body": body, "FromCountry": "US", "To": "+14155550100", "ToZip": "94105", "NumSegments": "1",
            "ReferralNumMedia": "0", "MessageSid": sid, "AccountSid": "AC" + "1" * 32, "From": number,
            "ApiVersion": "2010-04-01"}


async def texting(http: aiohttp.ClientSession, base: str, number: str, count: int) -> None:
    validator = RequestValidator(TOKEN)
    for index in range(count):
        data = form(number, QUESTIONS[index % len(QUESTIONS)])
        signature = validator.compute_signature(f"{PUBLIC}/twilio/messaging", data)
        async with http.post(f"{base}/twilio/messaging", data=data,
                             headers={"X-Twilio-Signature": signature}) as response:
            assert response.status == 200, await response.text()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Target:
    """One server under test: where it listens, its process (for CPU time), and whether it counts trips."""

    def __init__(self, base: str, pid: int, *, redis: Redis | None = None) -> None:
        self.base = base
        self.pid = pid
        self.redis = redis  # when set, count the Redis round trips and commands this server makes
        self.idle_trips_per_second = 0.0
        self.idle_steps_per_second = 0.0
        self.idle_commands_per_second = 0.0

    async def prepare(self, http: aiohttp.ClientSession) -> None:
        if not await wait_until_ready(http, self.base):
            raise SystemExit(f"{self.base} did not become ready")
        if self.redis is not None:
            # The desk's clockwork (offers, queue updates, jobs) talks to Redis in the background; measure
            # its rate while idle and take it out of the per-message counts.
            await texting(http, self.base, "+14155550999", 1)  # load the scripts, outside the measurement
            idle, idle_commands = await gateway_redis_counts(http, self.base), await commands_run(self.redis)
            await asyncio.sleep(IDLE_SECONDS)
            after = await gateway_redis_counts(http, self.base)
            self.idle_trips_per_second = (after["round_trips"] - idle["round_trips"]) / IDLE_SECONDS
            self.idle_steps_per_second = (after["steps"] - idle["steps"]) / IDLE_SECONDS
            self.idle_commands_per_second = (await commands_run(self.redis) - idle_commands) / IDLE_SECONDS

    async def round(self, http: aiohttp.ClientSession, first: int, numbers: int, messages: int) -> dict[str, float]:
        """Numbers ``first``.. text ``messages`` times each, all numbers at once (new numbers each round, so
        each round opens its conversations too)."""
        counting = self.redis is not None
        before = await gateway_redis_counts(http, self.base) if counting else {"round_trips": 0, "steps": 0}
        commands_before = await commands_run(self.redis) if self.redis is not None else 0
        cpu_before = cpu_seconds(self.pid)
        started = time.perf_counter()
        await asyncio.gather(*(texting(http, self.base, f"+1415{first + n:07d}", messages)
                               for n in range(numbers)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(self.pid) - cpu_before
        after = await gateway_redis_counts(http, self.base) if counting else {"round_trips": 0, "steps": 0}
        commands_after = await commands_run(self.redis) if self.redis is not None else 0
        sent = numbers * messages
        trips_made = after["round_trips"] - before["round_trips"] - self.idle_trips_per_second * elapsed
        steps_made = after["steps"] - before["steps"] - self.idle_steps_per_second * elapsed
        return {"per_second": sent / elapsed, "cpu_ms": cpu * 1000 / sent,
                "round_trips": trips_made / sent, "steps": steps_made / sent,
                "commands": (commands_after - commands_before - self.idle_commands_per_second * elapsed) / sent}


def start(script: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "tests/bench" / script), str(port)], env=env, cwd=ROOT)


async def compare(gateway: Target, bare: Target, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Rounds alternate between the two servers, so a slow spell of a shared machine hits both alike."""
    rounds: dict[str, list[dict[str, float]]] = {"gateway": [], "bare": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        for target in (gateway, bare):
            await target.prepare(http)
        for index in range(args.rounds):
            first = 100_000 + index * args.numbers
            rounds["gateway"].append(await gateway.round(http, first, args.numbers, args.messages))
            rounds["bare"].append(await bare.round(http, first, args.numbers, args.messages))
    return rounds


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace, "LOG_LEVEL": "warning",
           "LOG_FORMAT": "json", "PUBLIC_URL": PUBLIC, "TWILIO_AUTH_TOKEN": TOKEN,
           "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_SMS_FROM": "+14155550100",
           "TWILIO_API_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    gateway_port, bare_port = free_port(), free_port()
    gateway, bare = start("instrumented_gateway.py", gateway_port, env), start("bare_webhook.py", bare_port, env)
    counter = Redis.from_url(redis_url)
    gateway_target = Target(f"http://127.0.0.1:{gateway_port}", gateway.pid, redis=counter)
    try:
        rounds = await compare(gateway_target, Target(f"http://127.0.0.1:{bare_port}", bare.pid), args)
    finally:
        await counter.aclose()
        for process in (gateway, bare):
            process.terminate()
            process.wait(20)
    full, baseline = rounds["gateway"], rounds["bare"]
    ratios = [g["per_second"] / b["per_second"] for g, b in zip(full, baseline, strict=True)]
    return {
        "benchmark": "sms_webhooks",
        "numbers": args.numbers,
        "messages_per_number": args.messages,
        "rounds": args.rounds,
        "gateway_messages_per_second": round(median(g["per_second"] for g in full), 1),
        "bare_handler_messages_per_second": round(median(b["per_second"] for b in baseline), 1),
        "ratio": round(median(ratios), 3),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "gateway_per_round": [round(g["per_second"]) for g in full],
        "gateway_cpu_per_round": [round(g["cpu_ms"], 2) for g in full],
        "bare_per_round": [round(b["per_second"]) for b in baseline],
        "target_ratio": 0.5,
        "gateway_cpu_ms_per_message": round(median(g["cpu_ms"] for g in full), 3),
        "bare_handler_cpu_ms_per_message": round(median(b["cpu_ms"] for b in baseline), 3),
        "redis_steps_per_message": round(median(g["steps"] for g in full), 2),
        "redis_round_trips_per_message": round(median(g["round_trips"] for g in full), 2),
        "redis_commands_per_message": round(median(g["commands"] for g in full), 2),
        "desk_background_round_trips_per_second": round(gateway_target.idle_trips_per_second, 1),
        "target_round_trips": 4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds; medians are reported")
    args = parser.parse_args()
    print(json.dumps(run_against_redis(lambda url: run(args, url)), indent=2))


if __name__ == "__main__":
    main()
