"""The desk's shared figures for ``GET /metrics``: queue depth, backlog, longest wait and agents online per
queue, read from Redis at each scrape.

They describe state every instance shares, so they are not counted per process: each instance reads the same
values from Redis and reports them as gauges, and two instances scraped side by side show the same figure
rather than halves to be added (aggregate them with ``max``, never ``sum``). The reading is the agent API's
(handoff/overview.py), so the console and the dashboard never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from handoff.overview import QueueStanding


def desk_families(standings: list[QueueStanding] | None, now: datetime) -> list[Metric]:
    """The gauges for one reading of the desk; None (Redis did not answer) gives only ``hg_desk_up 0``."""
    up = GaugeMetricFamily("hg_desk_up", "Whether this scrape could read the desk's figures from Redis.")
    up.add_metric([], 0 if standings is None else 1)
    if standings is None:
        return [up]
    depth = GaugeMetricFamily("hg_queue_depth", "Conversations waiting live for an agent.", labels=["queue"])
    backlog = GaugeMetricFamily("hg_queue_backlog", "Asynchronous follow-ups (tickets, callbacks) waiting.",
                                labels=["queue"])
    oldest = GaugeMetricFamily("hg_queue_oldest_wait_seconds",
                               "How long the longest-waiting live conversation has waited (0: none waits).",
                               labels=["queue"])
    online = GaugeMetricFamily("hg_agents_online", "Agents online (not away) who serve the queue.",
                               labels=["queue"])
    for standing in standings:
        label = [standing.queue]
        depth.add_metric(label, standing.figures.depth)
        backlog.add_metric(label, standing.figures.backlog)
        oldest.add_metric(label, standing.oldest_wait_seconds(now) or 0.0)
        online.add_metric(label, standing.agents_online)
    return [up, depth, backlog, oldest, online]


class _Reading(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def desk_registry(standings: list[QueueStanding] | None, now: datetime) -> CollectorRegistry:
    """A registry holding one reading, rendered beside the process's own at a scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reading(desk_families(standings, now)))
    return registry
