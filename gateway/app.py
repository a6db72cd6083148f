"""The aiohttp application factory: every resource opened and closed in one cleanup context."""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from channels.base import Channel, ChannelContext, ChannelRegistry
from gateway import agent_socket, appkeys
from gateway.bots import build_bot
from gateway.channel_setup import build_channels
from gateway.helpdesk import KIND as HELPDESK_KIND
from gateway.helpdesk import HelpdeskWebhook
from gateway.metrics import GatewayMetrics
from gateway.middleware import request_middleware
from gateway.pipeline import Pipeline
from gateway.routes import setup_routes
from gateway.settings import Settings
from handoff.agents import AgentStore
from handoff.callbacks import CallbackBook
from handoff.calls import CallDesk
from handoff.context import BotTurnSummarizer
from handoff.desk import Desk
from handoff.holder import RulesHolder
from handoff.offers import Dispatcher
from handoff.problems import RulesError
from handoff.queues import QueueStore
from handoff.review.recorder import ReviewRecorder, team_zone
from handoff.ruleset import RuleSet
from handoff.shadow import ShadowLog, ShadowRules
from handoff.sla import QueueUpdates
from sessions.batching import RedisBatcher
from sessions.customers import CustomerStore
from sessions.jobs import JobQueue, JobRunner
from sessions.keys import Keys
from sessions.live import LiveFeed
from sessions.models import Conversation, utcnow
from sessions.store import AppendResult, ConversationStore, fan_out

log = structlog.get_logger(__name__)

SWEEP_SECONDS = 2.0
# Probe an idle connection after 10 s, every 5 s; give up after 3 unanswered probes (where the OS has them).
_KEEPALIVE = {
    option: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    assert settings.redis_url is not None, "the CLI resolves REDIS_URL (or starts an embedded Redis) first"
    # A blocking pool: under a burst, requests wait briefly for a connection instead of failing. A Redis
    # that vanished without closing its connections (a dead host, a cut network) is noticed by TCP
    # keepalive within about half a minute, at no cost per command (unlike a per-read socket timeout).
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_max_connections, timeout=5,
        socket_connect_timeout=2, health_check_interval=30,
        socket_keepalive=True, socket_keepalive_options=_KEEPALIVE,
    )
    redis = Redis(connection_pool=pool)
    keys = Keys(settings.redis_namespace)
    ttl = settings.conversation_ttl_seconds
    app[appkeys.REDIS] = redis
    batcher = RedisBatcher(redis)  # one per process: every hot step made in one loop turn shares a pipeline
    batcher.on_round_trip = functools.partial(app[appkeys.METRICS].redis_step, "batch")
    app[appkeys.STORE] = ConversationStore(redis, keys, ttl, batcher=batcher,
                                           max_messages=settings.max_messages_per_conversation)
    app[appkeys.CUSTOMERS] = CustomerStore(redis, keys, ttl, batcher=batcher)
    app[appkeys.QUEUES] = QueueStore(redis, keys)
    app[appkeys.AGENTS] = AgentStore(redis, keys)
    app[appkeys.DESK] = Desk(redis=redis, keys=keys, store=app[appkeys.STORE], agents=app[appkeys.AGENTS],
                             queues=app[appkeys.QUEUES])
    app[appkeys.SUMMARIZER] = BotTurnSummarizer()
    app[appkeys.JOBS] = JobRunner(JobQueue(redis, keys))
    app[appkeys.DISPATCHER] = Dispatcher(app[appkeys.DESK], settings.offer_timeout_seconds)
    app[appkeys.CALL_DESK] = CallDesk(app[appkeys.DESK], app[appkeys.DISPATCHER])
    dispatcher = app[appkeys.DISPATCHER]

    async def lapse(conversation_id: str) -> None:
        await dispatcher.lapse(conversation_id, passed_over=False)

    # Callbacks come due on the pipeline's clock, as business hours do (a test or a demo may set it).
    def clock() -> datetime:  # looked up each time: the pipeline comes later, and its clock may be replaced
        return app[appkeys.PIPELINE].clock()

    async def notify(stored: AppendResult) -> None:
        conversation = stored.conversation
        await app[appkeys.CHANNELS].get(conversation.channel).deliver(conversation, stored.message)

    app[appkeys.CALLBACKS] = CallbackBook(app[appkeys.DESK], clock=clock, lapse=lapse, notify=notify)
    async def long_wait(conversation_id: str, eta_seconds: int) -> None:
        def answers_menus(channel: str) -> bool:
            # Written offers reach customers who can be written to unprompted; a caller is offered it on the
            # call (channels/voice/adapter.py).
            capabilities = app[appkeys.CHANNELS].get(channel).capabilities
            return capabilities.callback_menu and capabilities.push

        stored = await app[appkeys.CALLBACKS].offer_if_long_wait(conversation_id, eta_seconds,
                                                                   app[appkeys.RULES].rules, answers_menus)
        if stored is not None:
            await notify(stored)

    app[appkeys.QUEUE_UPDATES] = QueueUpdates(app[appkeys.DESK], on_wait=long_wait)

    def team() -> tuple[ZoneInfo, str]:  # looked up each time: the rules come later and may be reloaded
        rules = app[appkeys.RULES].rules
        return team_zone(rules), rules.version

    app[appkeys.REVIEW] = ReviewRecorder(redis, keys, team, retention_days=settings.review_retention_days,
                                         idle_seconds=settings.review_idle_minutes * 60, batcher=batcher)
    live = LiveFeed(redis, keys)
    await live.start()
    app[appkeys.LIVE] = live
    yield
    await live.stop()
    await app[appkeys.REVIEW].drain()  # records of the last steps, before the batcher closes
    await batcher.aclose()  # what is already on its way to Redis gets there
    await redis.aclose()
    await pool.aclose()


async def _bot_ctx(app: web.Application) -> AsyncIterator[None]:
    bot = build_bot(app[appkeys.SETTINGS])
    app[appkeys.BOT] = bot
    yield
    await bot.aclose()


async def _rules_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the rules (language models included) off the event loop; SIGHUP reloads them."""
    settings = app[appkeys.SETTINGS]
    holder = await asyncio.to_thread(RulesHolder, settings.rules_dir)
    app[appkeys.RULES] = holder
    holders = [holder]
    if settings.rules_shadow_dir is not None:
        candidate = await asyncio.to_thread(RulesHolder, settings.rules_shadow_dir)
        shadow_log = ShadowLog(app[appkeys.REDIS], Keys(settings.redis_namespace),
                               settings.review_retention_days)
        app[appkeys.SHADOW] = ShadowRules(candidate, shadow_log)
        holders.append(candidate)
        log.info("rules.shadow", version=candidate.rules.version, live=holder.rules.version)
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        for each in holders:  # the live rules, and the candidate beside them
            try:
                await each.reload()
            except RulesError as exc:
                log.error("rules.reload_refused", problems=[str(p) for p in exc.problems],
                          kept=each.rules.version, directory=str(each.directory))

    def on_hangup() -> None:
        task = asyncio.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        installed = True
    except (RuntimeError, ValueError):  # not the main thread (tests run apps inside a running loop)
        installed = False
    yield
    if installed:
        loop.remove_signal_handler(signal.SIGHUP)


async def _desk_ctx(app: web.Application) -> AsyncIterator[None]:
    """The desk's clockwork, on every instance: lapsed offers go back to their queues, agents whose heartbeat
    ran out go offline and hand their conversations back, and waiting conversations are offered to free
    agents, at once when something changed (a kick) and every few seconds regardless."""
    dispatcher = app[appkeys.DISPATCHER]
    stopping = asyncio.Event()

    async def sweep() -> None:
        while not stopping.is_set():
            await dispatcher.wait_for_kick(SWEEP_SECONDS)
            if stopping.is_set():
                return
            rules, now = app[appkeys.RULES].rules, utcnow()
            try:
                with app[appkeys.METRICS].timed_step("desk_sweep"):
                    await _sweep_once(app, rules, now)
            except RedisError as exc:
                log.warning("desk.sweep_failed", error=type(exc).__name__)
            except Exception:  # a bug in one round must not stop the desk's clockwork on this instance
                log.exception("desk.sweep_crashed")

    task = asyncio.create_task(sweep(), name="desk-sweep")
    yield
    stopping.set()
    dispatcher.kick()
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:  # stuck in a Redis call: cancel, and never let shutdown hang on it
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        if not done:
            log.warning("desk.sweep_did_not_stop")


async def _sweep_once(app: web.Application, rules: RuleSet, now: datetime) -> None:
    """One round of the desk's clockwork."""
    dispatcher = app[appkeys.DISPATCHER]
    await dispatcher.expire_offers(now)
    for agent_id in await app[appkeys.DESK].go_offline_if_expired(now, rules):
        await dispatcher.withdraw_offers_to(agent_id)
        log.info("desk.agent_expired", agent_id=agent_id)
    # Business hours follow the pipeline's clock (fixed in tests, like the policy's).
    await app[appkeys.CALLBACKS].run_due(rules)
    await dispatcher.dispatch(rules, app[appkeys.PIPELINE].clock())
    await app[appkeys.QUEUE_UPDATES].send_due(rules, now)
    await app[appkeys.JOBS].run_due(now)
    if app[appkeys.SETTINGS].review_recording:  # conversations the bot kept that have gone quiet
        await app[appkeys.REVIEW].sweep_idle(now)


async def _after_handoff(app: web.Application, conversation: Conversation) -> None:
    """A conversation entered a queue: offer it now, and send its package to the help desk if set up."""
    app[appkeys.DISPATCHER].kick()
    helpdesk = app[appkeys.HELPDESK]
    if helpdesk is not None:
        await helpdesk.schedule(conversation.id, utcnow())
        app[appkeys.DISPATCHER].kick()


async def _helpdesk_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    helpdesk = None
    if settings.helpdesk_webhook_url is not None:
        secret_setting = settings.helpdesk_webhook_secret
        secret = secret_setting.get_secret_value() if secret_setting else None
        helpdesk = HelpdeskWebhook(str(settings.helpdesk_webhook_url), secret, app[appkeys.JOBS].jobs,
                                   app[appkeys.STORE], app[appkeys.SUMMARIZER])
    app[appkeys.HELPDESK] = helpdesk
    if helpdesk is not None:
        app[appkeys.JOBS].register(HELPDESK_KIND, helpdesk.handle)
    yield
    if helpdesk is not None:
        await helpdesk.aclose()


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """The channels and the pipeline that joins them to the bot, the rules and the desk."""
    settings = app[appkeys.SETTINGS]
    registry = ChannelRegistry()
    app[appkeys.CHANNELS] = registry
    review = app[appkeys.REVIEW] if settings.review_recording else None
    pipeline = Pipeline(app[appkeys.STORE], app[appkeys.BOT], registry, app[appkeys.RULES],
                        app[appkeys.QUEUES], on_handoff=functools.partial(_after_handoff, app),
                        return_window_seconds=settings.return_window_seconds,
                        staffing=lambda: app[appkeys.DISPATCHER].online_by_queue,
                        queue_figures=lambda: app[appkeys.QUEUE_UPDATES].last_staffing,
                        callbacks=app[appkeys.CALLBACKS], clock=business_clock(settings),
                        shadow=app.get(appkeys.SHADOW),
                        metrics=app[appkeys.METRICS],
                        on_bot_turn=review.arm if review else None)
    app[appkeys.PIPELINE] = pipeline
    context = ChannelContext(
        redis=app[appkeys.REDIS], keys=Keys(settings.redis_namespace), store=app[appkeys.STORE],
        customers=app[appkeys.CUSTOMERS], live=app[appkeys.LIVE], sink=pipeline, jobs=app[appkeys.JOBS],
        registry=registry, send_failed=app[appkeys.METRICS].send_failed,
    )
    started: list[Channel] = []
    try:
        for channel in app[appkeys.TRANSPORTS]:
            await channel.start(context)
            started.append(channel)
        # Every handoff step stored by this instance reaches its conversation's channel, once, and the
        # metrics and the review after it; each listener is isolated from the others' failures.
        listeners = [registry.on_status, app[appkeys.METRICS].on_status]
        app[appkeys.STORE].on_status = fan_out(*listeners, *([review.on_status] if review else []))
        yield
    finally:
        app[appkeys.STORE].on_status = None
        for channel in reversed(started):
            await channel.aclose()


def business_clock(settings: Settings) -> Callable[[], datetime]:
    """The time business hours and callbacks follow: the real one, or for a demo one that starts at
    BUSINESS_CLOCK_START and runs BUSINESS_CLOCK_SPEED times as fast."""
    start, speed = settings.business_clock_start, settings.business_clock_speed
    if start is None and speed == 1:
        return utcnow
    began = time.monotonic()
    origin = start.astimezone(UTC) if start is not None else utcnow()

    def clock() -> datetime:
        return origin + timedelta(seconds=(time.monotonic() - began) * speed)

    return clock


async def _shutdown(app: web.Application) -> None:
    """Close client connections first (Redis is still up), and let channels finish work in flight."""
    for channel in app[appkeys.TRANSPORTS]:
        await channel.shutdown()
    await agent_socket.close_all(app)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[request_middleware])
    app[appkeys.SETTINGS] = settings
    app[appkeys.METRICS] = metrics = GatewayMetrics()
    app[appkeys.AGENT_SOCKETS] = set()
    app[appkeys.TRANSPORTS] = build_channels(settings, app)
    app.cleanup_ctx.extend([_redis_ctx, _bot_ctx, _rules_ctx, _helpdesk_ctx, _desk_ctx, _pipeline_ctx])
    app.on_shutdown.append(_shutdown)
    setup_routes(app)
    for channel in app[appkeys.TRANSPORTS]:
        known = set(app.router.resources())
        channel.add_routes(app.router)
        # The routes a channel added carry its name in the request metrics' channel label.
        added = [r for r in app.router.resources() if r not in known]
        metrics.route_owners.update((r.canonical, channel.name) for r in added)
    return app
