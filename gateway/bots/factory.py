"""Chooses the bot the settings name."""

from __future__ import annotations

from gateway.bots.base import Bot
from gateway.bots.faq import FaqBot
from gateway.bots.http import HttpBot
from gateway.settings import Settings


def build_bot(settings: Settings) -> Bot:
    if settings.bot == "http":
        assert settings.bot_http_url is not None  # checked by Settings
        token = settings.bot_http_token.get_secret_value() if settings.bot_http_token else None
        return HttpBot(str(settings.bot_http_url), settings.bot_http_timeout_seconds,
                       settings.bot_http_fallback_text, token)
    return FaqBot.from_file(settings.faq_knowledge_base)
