"""Callbacks benchmark: 10,000 promised callbacks coming due within one minute, swept by 2 instances.

Each instance is its own process with its own Redis connections, running the real sweeper
(handoff.callbacks.CallbackBook.run_due) every ``--sweep`` seconds, as the gateway's desk clockwork does.
Every callback the sweep starts is then claimed for dialling by BOTH instances, the way the voice channel
claims an attempt's first leg (``cb_dial:<attempt>`` on the call's hash) before it asks Twilio: a second
claim is what a duplicated status update or a racing instance would try, and it must lose. Afterwards every
conversation is checked: in its queue once, one attempt, one dial.

The business clock starts at an open hour of the demo rules' `general` queue and runs at real speed once
the sweep begins; due times are spread evenly over ``--spread`` seconds. The delay reported is from a
callback's due time to the moment the sweep had moved it into its queue (what an agent can be offered), so
it includes the wait for the next sweep. Against REDIS_URL or a throwaway embedded Redis; prints one JSON
object.

    python tests/bench/bench_callbacks.py [--callbacks 10000] [--instances 2] [--spread 60] [--sweep 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway.settings import DEMO_RULES  # noqa: E402
from handoff.agents import AgentStore  # noqa: E402
from handoff.callbacks import CallbackBook  # noqa: E402
from handoff.desk import Desk  # noqa: E402
from handoff.loader import load_rules  # noqa: E402
from handoff.queues import QueueStore  # noqa: E402
from sessions.keys import Keys  # noqa: E402
from sessions.models import (  # noqa: E402
    CallbackRequest,
    CallbackSlot,
    ConversationEvent,
    ConversationState,
    Customer,
    Identity,
)
from sessions.store import ConversationStore  # noqa: E402

QUEUE = "general"
OPEN = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # Friday 10:00 in New York: `general` is open till 20:00


def _client(url: str) -> aioredis.Redis:
    """As the gateway connects: a blocking pool (gateway/app.py), so bursts wait for a connection."""
    return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=50))


def _desk(redis: aioredis.Redis, keys: Keys) -> tuple[Desk, ConversationStore]:
    store = ConversationStore(redis, keys, 3600)
    desk = Desk(redis=redis, keys=keys, store=store, agents=AgentStore(redis, keys), queues=QueueStore(redis, keys))
    return desk, store


async def seed(url: str, namespace: str, count: int, spread: float) -> dict[str, float]:
    """Conversations waiting for their callback, as a confirmed choice leaves them; due offsets (s)."""
    redis = _client(url)
    keys = Keys(namespace)
    desk, store = _desk(redis, keys)
    book = CallbackBook(desk)
    due: dict[str, float] = {}

    async def one(index: int) -> None:
        number = f"+1415555{index:04d}"
        created = await store.create(Customer(id=uuid.uuid4().hex, identities=[Identity(channel="sms",
                                                                                         address=number)]), "sms")
        cid = created.conversation.id
        offset = spread * index / count
        at = OPEN + timedelta(seconds=offset)
        request = CallbackRequest(queue=QUEUE, number=number, slot=CallbackSlot(start=at, asap=True),
                                  requested_at=OPEN, state="scheduled", due_at=at, why="asked")
        event = ConversationEvent(type="handoff.callback", conversation_id=cid)
        await store.transition(cid, ConversationState.CALLBACK, event,
                               updates={"callback": request, "queue": QUEUE},
                               allowed_from=[ConversationState.BOT])
        await book._plan(cid, at)
        due[cid] = offset

    order = list(range(count))
    random.shuffle(order)
    for start in range(0, count, 250):
        await asyncio.gather(*(one(i) for i in order[start:start + 250]))
    await redis.aclose()
    return due


def sweeper(url: str, namespace: str, name: str, spread: float, sweep: float, start: Any, results: Any) -> None:
    asyncio.run(_sweep(url, namespace, name, spread, sweep, start, results))


async def _sweep(url: str, namespace: str, name: str, spread: float, sweep: float, start: Any,
                 results: Any) -> None:
    """One instance: sweep on the business clock until every callback has come due and none is left."""
    redis = _client(url)
    keys = Keys(namespace)
    desk, _ = _desk(redis, keys)
    rules = load_rules(DEMO_RULES)
    results.put({"ready": name})
    while start.value == 0:  # every instance begins on the same business clock, once all are loaded
        await asyncio.sleep(0.01)
    started_at = start.value

    def clock() -> datetime:
        return OPEN + timedelta(seconds=time.time() - started_at)

    book = CallbackBook(desk, clock=clock)
    moved: list[tuple[str, float]] = []
    dials = 0
    cpu = time.process_time()
    while True:
        now = clock()
        started = await book.run_due(rules, now)
        elapsed = (clock() - OPEN).total_seconds()
        moved += [(cid, elapsed) for cid in started]
        # Both instances try to dial every callback started so far: only one may win each attempt.
        for cid in started:
            claimed = await redis.hsetnx(keys.call(cid), "cb_dial:1", name)
            dials += int(claimed)
        await redis.publish(f"{namespace}:bench-started", json.dumps(started))
        if elapsed > spread and not await redis.zcard(keys.callbacks_due("main")):
            break
        await asyncio.sleep(sweep)
    # The other instance's started callbacks: try to dial them too (a duplicate that must lose).
    others = [cid for cid in (await redis.hkeys(f"{namespace}:bench-all") or [])]
    for raw in others:
        cid = raw.decode()
        dials += int(await redis.hsetnx(keys.call(cid), "cb_dial:1", name))
    results.put({"name": name, "moved": moved, "dials": dials, "cpu_seconds": time.process_time() - cpu})
    await redis.aclose()


async def check(url: str, namespace: str, due: dict[str, float]) -> dict[str, Any]:
    redis = _client(url)
    keys = Keys(namespace)
    _, store = _desk(redis, keys)
    ids = list(due)
    conversations = []
    for start in range(0, len(ids), 500):
        conversations += await store.get_many(ids[start:start + 500])
    queued = {c.id for c in conversations if c.state is ConversationState.QUEUED}
    attempts = [len(c.callback.attempts) if c.callback else 0 for c in conversations]
    waiting = await redis.zcard(keys.queue("main", QUEUE))
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hget(keys.call(cid), "cb_dial:1")
        dialled = await pipe.execute()
    await redis.aclose()
    return {
        "in_queue": waiting, "queued_state": len(queued),
        "attempts_per_callback": sorted(set(attempts)), "dial_claims_held": sum(1 for d in dialled if d),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main_async(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    due = await seed(url, namespace, args.callbacks, args.spread)
    seeded = time.perf_counter() - t0
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = ctx.Value("d", 0.0)
    processes = [ctx.Process(target=sweeper, args=(url, namespace, f"i{n}", args.spread, args.sweep, start,
                                                   results)) for n in range(args.instances)]
    for process in processes:
        process.start()
    for _ in processes:
        await asyncio.to_thread(results.get)  # loaded and connected
    start.value = time.time()
    # Publish every started id so that each instance also tries to dial the others' (they must lose).
    redis = aioredis.Redis.from_url(url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{namespace}:bench-started")
    reports: list[dict[str, Any]] = []
    while len(reports) < args.instances:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            started = json.loads(message["data"])
            if started:
                await redis.hset(f"{namespace}:bench-all", mapping=dict.fromkeys(started, 1))
        while not results.empty():
            reports.append(results.get())
    await pubsub.aclose()
    for process in processes:
        process.join()
    moved = [(cid, at) for report in reports for cid, at in report["moved"]]
    starts: dict[str, int] = {}
    for cid, _ in moved:
        starts[cid] = starts.get(cid, 0) + 1
    delays = [max(0.0, at - due[cid]) * 1000 for cid, at in moved]
    checked = await check(url, namespace, due)
    keys = [k async for k in redis.scan_iter(match=f"{namespace}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start:start + 1000])
    await redis.aclose()
    return {
        "callbacks": args.callbacks, "instances": args.instances, "spread_seconds": args.spread,
        "sweep_seconds": args.sweep, "seed_seconds": round(seeded, 1),
        "started": len(starts), "started_twice": sum(1 for n in starts.values() if n > 1),
        "never_started": args.callbacks - len(starts),
        "started_by_instance": {r["name"]: len(r["moved"]) for r in reports},
        "dials": sum(r["dials"] for r in reports),
        "double_dials": sum(r["dials"] for r in reports) - len(starts),
        "due_to_queue_ms": {"p50": round(statistics.median(delays)), "p99": round(percentile(delays, 0.99)),
                            "max": round(max(delays))},
        "sweeper_cpu_seconds": {r["name"]: round(r["cpu_seconds"], 2) for r in reports},
        **checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--callbacks", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--spread", type=float, default=60.0)
    parser.add_argument("--sweep", type=float, default=2.0)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL")
    server = None
    if not url:
        server = EmbeddedRedis(Path(tempfile.mkdtemp()), persistent=False)
        server.start()
        url = server.url
    try:
        print(json.dumps(asyncio.run(main_async(args, url))))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
