"""Typed keys for everything the aiohttp app holds; resources are opened and closed in ``gateway.app``."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from channels.base import Channel, ChannelRegistry
from gateway.bots.base import Bot
from gateway.helpdesk import HelpdeskWebhook
from gateway.metrics import GatewayMetrics
from gateway.pipeline import Pipeline
from gateway.settings import Settings
from handoff.agents import AgentStore
from handoff.callbacks import CallbackBook
from handoff.calls import CallDesk
from handoff.context import Summarizer
from handoff.desk import Desk
from handoff.holder import RulesHolder
from handoff.offers import Dispatcher
from handoff.queues import QueueStore
from handoff.review.recorder import ReviewRecorder
from handoff.shadow import ShadowRules
from handoff.sla import QueueUpdates
from sessions.customers import CustomerStore
from sessions.jobs import JobRunner
from sessions.live import LiveFeed
from sessions.store import ConversationStore

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
STORE = web.AppKey("store", ConversationStore)
CUSTOMERS = web.AppKey("customers", CustomerStore)
LIVE = web.AppKey("live", LiveFeed)
BOT = web.AppKey("bot", Bot)
CHANNELS = web.AppKey("channels", ChannelRegistry)
PIPELINE = web.AppKey("pipeline", Pipeline)
RULES = web.AppKey("rules", RulesHolder)
SHADOW = web.AppKey("shadow", ShadowRules)  # only with RULES_SHADOW_DIR
QUEUES = web.AppKey("queues", QueueStore)
AGENTS = web.AppKey("agents", AgentStore)
DESK = web.AppKey("desk", Desk)
SUMMARIZER = web.AppKey("summarizer", Summarizer)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
CALL_DESK = web.AppKey("call_desk", CallDesk)
CALLBACKS = web.AppKey("callbacks", CallbackBook)
AGENT_SOCKETS = web.AppKey("agent_sockets", set[web.WebSocketResponse])
HELPDESK: web.AppKey[HelpdeskWebhook | None] = web.AppKey("helpdesk")
QUEUE_UPDATES = web.AppKey("queue_updates", QueueUpdates)
# The transports this gateway serves (gateway/channel_setup.py), each with its routes and adapters.
TRANSPORTS = web.AppKey("transports", list[Channel])
JOBS = web.AppKey("jobs", JobRunner)
# This process's figures for GET /metrics (gateway/metrics.py); the desk's come from Redis at each scrape.
METRICS = web.AppKey("metrics", GatewayMetrics)
REVIEW = web.AppKey("review", ReviewRecorder)
