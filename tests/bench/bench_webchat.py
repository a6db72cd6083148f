"""Web chat benchmark: N concurrent sessions, each sending messages and waiting for the bot's answer.

Starts the gateway in its own process (tests/bench/instrumented_gateway.py, the real app plus a round-trip
counter) against REDIS_URL or a throwaway embedded Redis, and prints one JSON object:
messages per second, p50/p99 bot-reply latency, Redis commands per customer message (INFO commandstats, the
commands scripts run included), and the gateway's Redis steps and round trips per customer message (steps
that shared a pipeline count once each as steps, once together as a round trip).

    python tests/bench/bench_webchat.py --sessions 200 --messages 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import free_port  # noqa: E402
from tests.bench.harness import commands_run, gateway_redis_counts, run_against_redis  # noqa: E402
from tests.readiness import wait_until_ready  # noqa: E402

QUESTIONS = ["Where is my order?", "how much is shipping", "can I return an item", "reset my password",
             "do you take credit cards", "when do I get my money back", "hello", "thanks"]


async def open_session(http: aiohttp.ClientSession, base: str) -> aiohttp.ClientWebSocketResponse:
    """A chat with its conversation open: a new chat's first message opens it (docs/webchat-protocol.md),
    so one is sent, and answered, before the measured messages."""
    ws = await http.ws_connect(f"{base}/ws/chat")
    first = await ws.receive_json(timeout=30)
    assert first["type"] == "session"
    if first["token"] is None:
        await converse(ws, 1, [])
    return ws


async def converse(ws: aiohttp.ClientWebSocketResponse, messages: int, latencies: list[float]) -> None:
    for i in range(messages):
        started = time.perf_counter()
        await ws.send_json({"type": "message", "text": QUESTIONS[i % len(QUESTIONS)],
                            "client_id": uuid.uuid4().hex})
        while True:
            frame = await ws.receive_json(timeout=30)
            if frame.get("sender") == "bot":
                latencies.append(time.perf_counter() - started)
                break


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    # Every simulated customer comes from this one address: lift the per-address allowance of new chats.
    env = {**os.environ, "REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace, "LOG_LEVEL": "warning",
           "LOG_FORMAT": "json", "CHAT_NEW_CONVERSATIONS_PER_HOUR_PER_ADDRESS": str(max(20, args.sessions * 2))}
    gateway = subprocess.Popen([sys.executable, str(ROOT / "tests/bench/instrumented_gateway.py"), str(port)],
                               env=env, cwd=ROOT)
    redis = aioredis.Redis.from_url(redis_url)
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            if not await wait_until_ready(http, base):
                raise SystemExit("the gateway did not become ready")
            opening = time.perf_counter()
            sockets = await asyncio.gather(*(open_session(http, base) for _ in range(args.sessions)))
            open_seconds = time.perf_counter() - opening
            latencies: list[float] = []
            commands_before, trips_before = await commands_run(redis), await gateway_redis_counts(http, base)
            started = time.perf_counter()
            await asyncio.gather(*(converse(ws, args.messages, latencies) for ws in sockets))
            elapsed = time.perf_counter() - started
            trips_after = await gateway_redis_counts(http, base)
            commands_after = await commands_run(redis)
            await asyncio.gather(*(ws.close() for ws in sockets))
        sent = args.sessions * args.messages
        trips = trips_after["round_trips"] - trips_before["round_trips"]
        steps = trips_after["steps"] - trips_before["steps"]
        return {
            "benchmark": "webchat",
            "sessions": args.sessions,
            "messages_per_session": args.messages,
            "customer_messages": sent,
            "open_seconds": round(open_seconds, 3),
            "seconds": round(elapsed, 3),
            "messages_per_second": round(sent / elapsed, 1),
            "bot_reply_latency_ms": {"p50": round(percentile(latencies, 50) * 1000, 2),
                                     "p99": round(percentile(latencies, 99) * 1000, 2)},
            "redis_commands_per_message": round((commands_after - commands_before) / sent, 2),
            "redis_steps_per_message": round(steps / sent, 2),
            "redis_round_trips_per_message": round(trips / sent, 2),
        }
    finally:
        gateway.terminate()
        gateway.wait(20)
        keys = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i:i + 1000])
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10, help="messages per session")
    args = parser.parse_args()
    print(json.dumps(run_against_redis(lambda url: run(args, url)), indent=2))


if __name__ == "__main__":
    main()
