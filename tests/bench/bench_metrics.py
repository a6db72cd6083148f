"""``GET /metrics`` scrape time with a busy desk in Redis: many queues, agents and waiting conversations.

A real gateway (create_app, the shipped rules plus ``--queues`` extra queues in a copy of them) on a
throwaway embedded Redis (or REDIS_URL), scraped over HTTP from the same process, one request at a time.
Timed in turn, each ``--scrapes`` times: ``GET /healthz`` (the cheapest request through the same server),
``GET /api/queues`` (the agent API's queue list: the same desk reading, as JSON) and ``GET /metrics``, first
with an empty desk, then after seeding ``--conversations`` live queue entries and ``--backlog`` follow-ups
spread over every queue and priority, and ``--agents`` agents, half of them online. Agents online have
capacity 0 and the desk's wait updates are switched off, so the desk's clockwork (every 2 s) does not
compete with the scrapes for the CPU; nothing else is changed. Prints one JSON object.

    python tests/bench/bench_metrics.py [--queues 50] [--conversations 20000] [--agents 500] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import appkeys  # noqa: E402
from gateway.app import create_app  # noqa: E402
from gateway.embedded_redis import free_port  # noqa: E402
from gateway.settings import DEMO_RULES, Settings  # noqa: E402
from handoff.agents import AgentStore, Presence  # noqa: E402
from handoff.queues import MAX_PRIORITY, queue_score  # noqa: E402
from sessions.keys import Keys  # noqa: E402
from sessions.models import utcnow  # noqa: E402
from tests.bench.harness import run_against_redis  # noqa: E402


def rules_with_queues(target: Path, extra: int) -> Path:
    """The shipped rules, with ``extra`` more always-open queues nobody routes to (they are still listed)."""
    shutil.copytree(DEMO_RULES, target)
    with (target / "queues.yaml").open("a", encoding="utf-8") as queues:
        for n in range(extra):
            queues.write(f"\n  extra_{n:03d}:\n    name: Extra queue {n}\n    hours: always\n")
    return target


async def seed(redis: Redis, keys: Keys, queues: list[str], conversations: int, backlog: int,
               agents: int) -> None:
    now_ms = time.time() * 1000
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(conversations + backlog):
            queue = queues[n % len(queues)]
            since = datetime.fromtimestamp((now_ms - random.uniform(0, 3_600_000)) / 1000, tz=utcnow().tzinfo)
            key = keys.queue("main", queue) if n < conversations else keys.backlog("main", queue)
            pipe.zadd(key, {uuid.uuid4().hex: queue_score(random.randint(0, MAX_PRIORITY), since)})
        await pipe.execute()
    store = AgentStore(redis, keys)
    for n in range(agents):
        agent, _ = await store.add(f"Agent {n}", ["billing"] if n % 2 else [], ["en"], [])
        if n % 2 == 0:  # online, but full: the desk's clockwork finds nobody to offer to
            await store.set_presence(agent.id, Presence.ONLINE, 0, utcnow())


async def timed(http: aiohttp.ClientSession, url: str, count: int, **headers: str) -> tuple[list[float], str]:
    times: list[float] = []
    text = ""
    for _ in range(count):
        started = time.perf_counter()
        async with http.get(url, headers=headers) as response:
            text = await response.text()
            assert response.status == 200, text
        times.append((time.perf_counter() - started) * 1000)
    return times, text


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered), 3),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 3)}


async def run(redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    namespace = f"b{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory() as tmp:
        rules = rules_with_queues(Path(tmp) / "rules", args.queues)
        port = free_port()
        settings = Settings(_env_file=None, redis_url=redis_url, redis_namespace=namespace,  # type: ignore[call-arg]
                            data_dir=Path(tmp), rules_dir=rules, port=port, log_level="warning",
                            log_format="json")
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

        async def no_wait_updates(*_: Any) -> int:
            return 0

        app[appkeys.QUEUE_UPDATES].send_due = no_wait_updates  # type: ignore[method-assign]
        redis, keys = app[appkeys.REDIS], Keys(namespace)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                queue_names = [n for n, q in app[appkeys.RULES].rules.queues.queues.items() if not q.retired]
                _, token = await AgentStore(redis, keys).add("Bench", [], ["en"], [])
                bearer = {"Authorization": f"Bearer {token}"}
                await timed(http, f"{base}/metrics", 20)  # warm up
                empty, _ = await timed(http, f"{base}/metrics", args.scrapes)
                await seed(redis, keys, queue_names, args.conversations, args.backlog, args.agents)
                results: dict[str, list[float]] = {"healthz": [], "api_queues": [], "metrics": []}
                text = ""
                for _ in range(args.scrapes // 10):  # in turn, so a slow spell hits all three alike
                    results["healthz"] += (await timed(http, f"{base}/healthz", 10))[0]
                    results["api_queues"] += (await timed(http, f"{base}/api/queues", 10, **bearer))[0]
                    times, text = await timed(http, f"{base}/metrics", 10)
                    results["metrics"] += times
        finally:
            await runner.cleanup()
            cleanup = Redis.from_url(redis_url)
            found = [k async for k in cleanup.scan_iter(match=f"{namespace}:*", count=1000)]
            if found:
                await cleanup.delete(*found)
            await cleanup.aclose()
    families = list(text_string_to_metric_families(text))
    depth = sum(s.value for f in families if f.name == "hg_queue_depth" for s in f.samples)
    assert depth == args.conversations, depth
    metrics, api = summary(results["metrics"]), summary(results["api_queues"])
    return {
        "queues": len(queue_names), "conversations_waiting": args.conversations, "backlog": args.backlog,
        "agents": args.agents, "agents_online": (args.agents + 1) // 2, "scrapes": len(results["metrics"]),
        "metrics_empty_desk": summary(empty), "metrics": metrics, "api_queues": api,
        "healthz": summary(results["healthz"]),
        "metrics_vs_api_queues": round(metrics["median_ms"] / api["median_ms"], 2),
        "page_bytes": len(text.encode()), "series": sum(len(f.samples) for f in families),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=50, help="extra queues beside the shipped ones")
    parser.add_argument("--conversations", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=2_000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(run_against_redis(lambda url: run(url, args)), indent=2))


if __name__ == "__main__":
    main()
