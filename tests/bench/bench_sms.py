"""SMS webhook benchmark: inbound messages per second through the whole pipeline, against a bare handler.

Starts the real gateway (instrumented_gateway.py: the app plus a Redis round-trip counter) and, in the same
run, a bare aiohttp handler that parses the same form and makes one Redis write (bare_webhook.py), each in
its own process against the same Redis. Then posts correctly signed Twilio webhooks, every form field Twilio
sends included: N numbers, each texting M times one after another, all numbers at once. The gateway does
everything: signature, dedupe, conversation, transcript, bot, TwiML reply. Prints one JSON object.

    python tests/bench/bench_sms.py [--numbers 100] [--messages 10]
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
from typing import Any

import aiohttp
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import free_port  # noqa: E402
from tests.bench.harness import run_against_redis  # noqa: E402
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


async def measure(base: str, numbers: int, messages: int, counter: bool) -> dict[str, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        if not await wait_until_ready(http, base):
            raise SystemExit(f"{base} did not become ready")
        # The desk's clockwork (offers, queue updates, jobs) talks to Redis in the background; measure its
        # rate while idle and take it out of the per-message count.
        idle_rate = 0.0
        if counter:
            await texting(http, base, "+14155550999", 1)  # load the scripts once, outside the measurement
            idle_start = await trips(http, base)
            await asyncio.sleep(IDLE_SECONDS)
            idle_rate = (await trips(http, base) - idle_start - 1) / IDLE_SECONDS
        before = await trips(http, base) if counter else 0
        started = time.perf_counter()
        await asyncio.gather(*(texting(http, base, f"+1415555{n:04d}", messages) for n in range(numbers)))
        elapsed = time.perf_counter() - started
        after = await trips(http, base) if counter else 0
    sent = numbers * messages
    background = idle_rate * elapsed
    return {"per_second": sent / elapsed,
            "round_trips": (after - before - 1 - background) / sent if counter else 0.0,
            "background_round_trips_per_second": idle_rate}


async def trips(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"{base}/bench/redis-roundtrips") as response:
        return int((await response.json())["round_trips"])


def start(script: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(ROOT / "tests/bench" / script), str(port)], env=env, cwd=ROOT)


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace, "LOG_LEVEL": "warning",
           "LOG_FORMAT": "json", "PUBLIC_URL": PUBLIC, "TWILIO_AUTH_TOKEN": TOKEN,
           "TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_SMS_FROM": "+14155550100",
           "TWILIO_API_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    gateway_port, bare_port = free_port(), free_port()
    gateway, bare = start("instrumented_gateway.py", gateway_port, env), start("bare_webhook.py", bare_port, env)
    try:
        full = await measure(f"http://127.0.0.1:{gateway_port}", args.numbers, args.messages, counter=True)
        baseline = await measure(f"http://127.0.0.1:{bare_port}", args.numbers, args.messages, counter=False)
    finally:
        for process in (gateway, bare):
            process.terminate()
            process.wait(20)
    return {
        "benchmark": "sms_webhooks",
        "numbers": args.numbers,
        "messages_per_number": args.messages,
        "gateway_messages_per_second": round(full["per_second"], 1),
        "bare_handler_messages_per_second": round(baseline["per_second"], 1),
        "ratio": round(full["per_second"] / baseline["per_second"], 3),
        "target_ratio": 0.5,
        "redis_round_trips_per_message": round(full["round_trips"], 2),
        "desk_background_round_trips_per_second": round(full["background_round_trips_per_second"], 1),
        "target_round_trips": 4,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(run_against_redis(lambda url: run(args, url)), indent=2))


if __name__ == "__main__":
    main()
