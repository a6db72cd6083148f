"""This process's own figures for ``GET /metrics``: requests, websockets, webhooks, handoffs it made, time to
agent, Twilio send failures, bot and Redis latency (docs/metrics.md lists each one).

Each app has its own registry, never prometheus_client's global one, so several apps in one process (tests,
benchmarks) keep their counts apart. Every label takes values from a bounded set: a route is the aiohttp
route's canonical path (``/api/conversations/{id}``, never a real id), a channel is a transport or adapter
name from the registry, a queue and a reason come from the rules, a status is an HTTP status, a method one of
the usual seven (else ``other``). Paths nobody registered are all ``unmatched``. The desk's shared figures
(queue depth, waits, agents online) are not here: they are read from Redis at each scrape
(gateway/desk_metrics.py), so instances never double-count.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sessions.models import StatusKind, StatusUpdate

GATEWAY = "gateway"  # the channel label of the gateway's own routes (API, pages, health)
UNMATCHED = "unmatched"
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_REQUEST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BOT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SESSION = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0)
_WAIT = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        route = ["route", "channel"]
        self.requests = Counter("hg_http_requests_total", "HTTP requests answered, by route and status.",
                                ["method", *route, "status"], registry=registry)
        self.request_seconds = Histogram("hg_http_request_duration_seconds",
                                         "Time to answer an HTTP request (websockets excluded).",
                                         ["method", *route], buckets=_REQUEST, registry=registry)
        self.websockets = Counter("hg_websocket_connections_total", "Websocket connections accepted.",
                                  route, registry=registry)
        self.websockets_open = Gauge("hg_websocket_connections_open",
                                     "Websocket requests in progress (the handshake included).", route,
                                     registry=registry)
        self.websocket_seconds = Histogram("hg_websocket_connection_duration_seconds",
                                           "How long accepted websocket connections stayed open.", route,
                                           buckets=_SESSION, registry=registry)
        self.webhooks = Counter("hg_webhook_requests_total",
                                "Channel webhooks (Twilio) by outcome: accepted, or the error code answered.",
                                [*route, "outcome"], registry=registry)
        self.handoffs = Counter("hg_handoffs_total",
                                "Conversations this instance handed from the bot to a queue.",
                                ["reason", "queue", "channel"], registry=registry)
        self.time_to_agent = Histogram("hg_time_to_agent_seconds",
                                       "From the handoff decision to an agent taking the conversation.",
                                       ["queue", "channel"], buckets=_WAIT, registry=registry)
        self.send_failures = Counter("hg_twilio_send_failures_total",
                                     "Twilio REST requests that failed: rejected (4xx), retryable "
                                     "(unreachable, 429, 5xx), ambiguous (a call may have been placed) or "
                                     "crashed.",
                                     ["channel", "action", "kind"], registry=registry)
        self.bot_seconds = Histogram("hg_bot_response_seconds", "Time the bot took to answer one turn.",
                                     ["bot"], buckets=_BOT, registry=registry)
        self.redis_seconds = Histogram("hg_redis_step_seconds",
                                       "Redis round trips: a batch of hot steps, a desk sweep round, "
                                       "a scrape's read.",
                                       ["step"], buckets=_FAST, registry=registry)
        # Canonical path -> the transport that registered it (create_app fills it in).
        self.route_owners: dict[str, str] = {}
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    # -- requests ----------------------------------------------------------------------------------------
    def route_of(self, request: web.Request) -> tuple[str, str]:
        """(route, channel) labels: the route's canonical path and the transport that owns it."""
        resource = request.match_info.route.resource
        if resource is None:
            return UNMATCHED, GATEWAY
        canonical = resource.canonical
        return canonical, self.route_owners.get(canonical, GATEWAY)

    @contextmanager
    def websocket(self, route: str, channel: str) -> Iterator[None]:
        """Around a websocket request: counted open while it runs."""
        gauge = self.websockets_open.labels(route, channel)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def answered(self, request: web.Request, route: str, channel: str, status: int, seconds: float, *,
                 response: web.StreamResponse | None) -> None:
        """One request done: counted by status; timed, or for an accepted websocket, its time open; and for a
        channel's POST (a webhook), its outcome."""
        method = request.method if request.method in _METHODS else "other"  # a client may send any token
        if isinstance(response, web.WebSocketResponse) and status == 101:
            self.requests.labels(method, route, channel, str(status)).inc()
            self.websockets.labels(route, channel).inc()
            self.websocket_seconds.labels(route, channel).observe(seconds)
            return
        key = (method, route, channel, status)
        children = self._children.get(key)
        if children is None:  # labels() is most of the cost of counting a request: looked up once per key
            children = (self.requests.labels(method, route, channel, str(status)),
                        self.request_seconds.labels(method, route, channel))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if channel != GATEWAY and method == "POST":
            self.webhooks.labels(route, channel, _outcome(status, response)).inc()

    # -- the rest of the process ---------------------------------------------------------------------
    def handed_off(self, reason: str, queue: str, channel: str) -> None:
        self.handoffs.labels(reason, queue, channel).inc()

    def bot_answered(self, bot: str, seconds: float) -> None:
        self.bot_seconds.labels(bot).observe(seconds)

    def send_failed(self, channel: str, action: str, kind: str) -> None:
        self.send_failures.labels(channel, action, kind).inc()

    def redis_step(self, step: str, seconds: float) -> None:
        self.redis_seconds.labels(step).observe(seconds)

    @contextmanager
    def timed_step(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.redis_step(step, time.perf_counter() - started)

    async def on_status(self, update: StatusUpdate) -> None:
        """A status listener (sessions/store.py): an assignment this instance made, with how long the
        customer waited for it, goes into time to agent."""
        waited = update.data.get("waited_seconds")
        if update.kind is StatusKind.ASSIGNED and isinstance(waited, int | float):
            queue = update.status.get("queue")
            self.time_to_agent.labels(queue if isinstance(queue, str) else "", update.channel).observe(waited)


def _outcome(status: int, response: web.StreamResponse | None) -> str:
    """``accepted`` for a 2xx or 3xx; else the JSON error's code (ours, so a bounded set), or the status."""
    if status < 400:
        return "accepted"
    if isinstance(response, web.Response) and response.content_type == "application/json":
        body = response.body
        if isinstance(body, bytes):
            try:
                code = json.loads(body).get("code")
            except (ValueError, AttributeError):
                code = None
            if isinstance(code, str) and _CODE.fullmatch(code):
                return code
    return f"status_{status}"
