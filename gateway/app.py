"""The aiohttp application factory: every resource opened and closed in one cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from channels.base import ChannelRegistry
from channels.webchat import WebChatAdapter, WebChatConfig, WebChatEndpoint
from gateway import appkeys
from gateway.bots import build_bot
from gateway.middleware import error_middleware, request_context_middleware
from gateway.pipeline import Pipeline
from gateway.routes import setup_routes
from gateway.settings import Settings
from sessions.customers import CustomerStore
from sessions.keys import Keys
from sessions.live import LiveFeed
from sessions.store import ConversationStore


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    assert settings.redis_url is not None, "the CLI resolves REDIS_URL (or starts an embedded Redis) first"
    # A blocking pool: under a burst, requests wait briefly for a connection instead of failing.
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_max_connections, timeout=5,
        socket_connect_timeout=2, health_check_interval=30,
    )
    redis = Redis(connection_pool=pool)
    keys = Keys(settings.redis_namespace)
    ttl = settings.conversation_ttl_seconds
    app[appkeys.REDIS] = redis
    app[appkeys.STORE] = ConversationStore(redis, keys, ttl)
    app[appkeys.CUSTOMERS] = CustomerStore(redis, keys, ttl)
    live = LiveFeed(redis, keys)
    await live.start()
    app[appkeys.LIVE] = live
    yield
    await live.stop()
    await redis.aclose()
    await pool.aclose()


async def _bot_ctx(app: web.Application) -> AsyncIterator[None]:
    bot = build_bot(app[appkeys.SETTINGS])
    app[appkeys.BOT] = bot
    yield
    await bot.aclose()


async def _pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    channels = ChannelRegistry()
    channels.register(WebChatAdapter())
    app[appkeys.CHANNELS] = channels
    pipeline = Pipeline(app[appkeys.STORE], app[appkeys.BOT], channels)
    app[appkeys.PIPELINE] = pipeline
    secret = settings.identity_secret.get_secret_value() if settings.identity_secret else None
    app[appkeys.WEBCHAT] = WebChatEndpoint(
        WebChatConfig(settings.allowed_origins, settings.max_message_chars, secret),
        app[appkeys.STORE], app[appkeys.CUSTOMERS], app[appkeys.LIVE], pipeline,
    )
    yield


async def _close_sockets(app: web.Application) -> None:
    await app[appkeys.WEBCHAT].close_all()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[request_context_middleware, error_middleware])
    app[appkeys.SETTINGS] = settings
    app.cleanup_ctx.extend([_redis_ctx, _bot_ctx, _pipeline_ctx])
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    return app
