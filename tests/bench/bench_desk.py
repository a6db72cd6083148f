"""Desk benchmark: 2,000 queued conversations and 50 agents claiming them concurrently.

Runs the real desk (handoff.desk.Desk: read the conversation, claim.lua on the desk's tag, then the
conversation's own state step) against REDIS_URL or a throwaway embedded Redis, in one process. Every agent
keeps claiming from the head of the queue until it is empty; contention is the point. Afterwards it checks
that no conversation was assigned twice and none was lost. Baseline in the same run: the smallest atomic
claim Redis can do (HSETNX on the same hash plus ZREM, pipelined), by the same 50 workers on the same set.
Prints one JSON object.

    python tests/bench/bench_desk.py [--conversations 2000] [--agents 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import EmbeddedRedis  # noqa: E402
from gateway.settings import DEMO_RULES  # noqa: E402
from handoff.agents import AgentStore, Presence  # noqa: E402
from handoff.desk import Desk, DeskError  # noqa: E402
from handoff.loader import load_rules  # noqa: E402
from handoff.queues import QueueStore  # noqa: E402
from sessions.keys import Keys  # noqa: E402
from sessions.models import (  # noqa: E402
    ConversationEvent,
    ConversationState,
    Customer,
    Direction,
    HandoffRecord,
    Message,
    SenderKind,
    utcnow,
)
from sessions.store import ConversationStore  # noqa: E402

QUEUE = "billing"


async def seed(redis: aioredis.Redis, keys: Keys, count: int) -> list[str]:
    """Conversations handed off to the billing queue, as the pipeline leaves them."""
    store = ConversationStore(redis, keys, 3600)
    queues = QueueStore(redis, keys)
    ids: list[str] = []

    async def one(index: int) -> None:
        created = await store.create(Customer(id=uuid.uuid4().hex), "webchat")
        cid = created.conversation.id
        record = HandoffRecord(reason="explicit_request", trigger_rule="explicit_request", explanation="bench",
                               priority=index % 4, queue=QUEUE, queue_name="Billing", skills=["billing"],
                               mode="live", route_rule="billing", route_explanation="bench",
                               rules_version="bench", decided_at=utcnow())
        notice = Message(conversation_id=cid, direction=Direction.OUTBOUND, sender=SenderKind.SYSTEM,
                         text="queued", channel="webchat")
        await queues.enqueue(QUEUE, cid, record.priority, utcnow())
        await store.append_and_move(notice, ConversationState.QUEUED,
                                    [ConversationEvent(type="handoff.queued", conversation_id=cid)],
                                    updates={"queue": QUEUE, "handoff": record, "priority": record.priority},
                                    allowed_from=[ConversationState.BOT])
        ids.append(cid)

    for start in range(0, count, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 200))))
    return ids


async def run_desk(redis: aioredis.Redis, keys: Keys, agents_count: int, ids: list[str]) -> dict[str, object]:
    store = ConversationStore(redis, keys, 3600)
    agents = AgentStore(redis, keys)
    desk = Desk(redis=redis, keys=keys, store=store, agents=agents, queues=QueueStore(redis, keys))
    rules = load_rules(DEMO_RULES)
    team = []
    for index in range(agents_count):
        agent, _ = await agents.add(f"bench{index}", ["billing"], ["en"], [])
        await agents.set_presence(agent.id, Presence.ONLINE, len(ids), utcnow())
        team.append(agent)
    latencies: list[float] = []
    conflicts = 0
    won: dict[str, list[str]] = {}

    async def worker(agent_index: int) -> None:
        nonlocal conflicts
        agent = team[agent_index]
        while True:
            head = [m.decode() for m in await redis.zrange(keys.queue("main", QUEUE), 0, 9)]
            if not head:
                return
            cid = random.choice(head)
            started = time.perf_counter()
            try:
                await desk.claim(agent, cid, rules)
                won.setdefault(cid, []).append(agent.id)
            except DeskError:
                conflicts += 1
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(agents_count)))
    seconds = time.perf_counter() - started
    assignments = {k.decode(): v.decode() for k, v in (await redis.hgetall(keys.assignments("main"))).items()}
    conversations = await store.get_many(ids)
    consistent = all(c.agent == assignments.get(c.id) and c.state is ConversationState.ASSIGNED
                     for c in conversations)
    latencies.sort()
    return {
        "claims": len(won),
        "claims_per_second": round(len(won) / seconds, 1),
        "attempts_lost_to_another_agent": conflicts,
        "claim_latency_ms": {"p50": round(statistics.median(latencies), 2),
                             "p99": round(latencies[int(len(latencies) * 0.99) - 1], 2)},
        "double_assignments": sum(1 for holders in won.values() if len(holders) > 1),
        "lost": len(ids) - len(assignments),
        "desk_and_conversations_agree": consistent,
        "seconds": round(seconds, 3),
    }


async def run_baseline(redis: aioredis.Redis, namespace: str, count: int, workers: int) -> float:
    queue, owners = f"{namespace}:{{bench}}:queue", f"{namespace}:{{bench}}:owners"
    await redis.zadd(queue, {str(i): i for i in range(count)})
    claimed = 0

    async def worker(name: str) -> None:
        nonlocal claimed
        while True:
            head = await redis.zrange(queue, 0, 9)
            if not head:
                return
            member = random.choice(head)
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hsetnx(owners, member, name)
                pipe.zrem(queue, member)
                won, _ = await pipe.execute()
            claimed += int(won)

    started = time.perf_counter()
    await asyncio.gather(*(worker(str(i)) for i in range(workers)))
    return claimed / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--agents", type=int, default=50)
    args = parser.parse_args()
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = EmbeddedRedis(Path(tempfile.mkdtemp()), persistent=False)
        server.start()
        url = server.url
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    # As the gateway does: a burst waits for a free connection rather than failing.
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=10)
    redis = aioredis.Redis(connection_pool=pool)
    try:
        keys = Keys(namespace)
        ids = await seed(redis, keys, args.conversations)
        desk = await run_desk(redis, keys, args.agents, ids)
        baseline = await run_baseline(redis, namespace, args.conversations, args.agents)
        print(json.dumps({
            "benchmark": "desk_claims", "conversations": args.conversations, "agents": args.agents,
            **desk,
            "baseline_bare_claims_per_second": round(baseline, 1),
            "desk_vs_bare_claim_throughput": round(float(desk["claims_per_second"]) / baseline, 3),  # type: ignore[arg-type]
        }, indent=2))
    finally:
        keys_left = [k async for k in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys_left:
            await redis.delete(*keys_left)
        await redis.aclose()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
