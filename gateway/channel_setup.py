"""Which channels this gateway serves, each built from the settings: the one place that knows them all.

Everything else (app.py, the routes, the pipeline, the desk) goes through ``channels.base``'s interfaces,
so adding a channel is a builder here and a package under ``channels/``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from channels.base import Channel
from channels.twilio.webhooks import TwilioWebhooks
from channels.twilio_messaging import MessagingConfig, TwilioMessagingChannel, TwilioMessagingSettings
from channels.twilio_messaging.outbound import OutboundConfig
from channels.voice.channel import RestAccount, VoiceChannel, VoiceSettings
from channels.voice.config import VoiceConfig
from channels.webchat import WebChatChannel, WebChatConfig
from channels.webchat.access import origin_of
from gateway.settings import Settings
from gateway.voice_desk import GatewayVoiceDesk
from sessions.limits import Rate


def twilio_webhooks(settings: Settings) -> TwilioWebhooks | None:
    """How Twilio's signatures are checked here; None while PUBLIC_URL or TWILIO_AUTH_TOKEN is unset."""
    if settings.public_url is None or settings.twilio_auth_token is None:
        return None
    return TwilioWebhooks(str(settings.public_url), settings.twilio_auth_token.get_secret_value())


def _webchat(settings: Settings, app: web.Application) -> Channel:
    secret = settings.identity_secret.get_secret_value() if settings.identity_secret else None
    return WebChatChannel(WebChatConfig(
        settings.allowed_origins, settings.max_message_chars, secret,
        public_origin=origin_of(str(settings.public_url)) if settings.public_url else None,
        message_rate=Rate.per_minute(settings.chat_messages_per_minute, burst=settings.chat_message_burst),
        new_conversation_rate=Rate.per_hour(settings.chat_new_conversations_per_hour_per_address),
        trusted_proxies=settings.trusted_proxies,
    ))


def _twilio_messaging(settings: Settings, app: web.Application) -> Channel:
    webhooks = twilio_webhooks(settings)
    outbound = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        callback = webhooks.absolute("/twilio/messaging/status") if webhooks else None
        outbound = OutboundConfig(
            settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
            str(settings.twilio_api_base_url), settings.twilio_sms_from, settings.twilio_whatsapp_from,
            status_callback=callback,
        )
    return TwilioMessagingChannel(TwilioMessagingSettings(
        webhooks=webhooks, outbound=outbound,
        messaging=MessagingConfig(
            help_text=settings.sms_help_text, link_channels=settings.link_sms_and_whatsapp,
            reply_budget_seconds=settings.twilio_reply_budget_seconds,
        ),
        whatsapp_template_sid=settings.twilio_whatsapp_template_sid,
    ))


def _twilio_voice(settings: Settings, app: web.Application) -> Channel:
    account = None
    if settings.twilio_account_sid and settings.twilio_auth_token:
        account = RestAccount(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                              str(settings.twilio_api_base_url))
    config = VoiceConfig(
        from_number=settings.twilio_voice_from,
        hold_audio_url=str(settings.voice_hold_audio_url) if settings.voice_hold_audio_url else None,
        announce_seconds=settings.voice_announce_seconds,
        reply_budget_seconds=settings.voice_reply_budget_seconds,
        agent_ring_seconds=settings.voice_agent_ring_seconds,
        brief_seconds=settings.voice_agent_answer_seconds,
        voice=settings.voice_say_voice,
    )
    desk = GatewayVoiceDesk(app)
    return VoiceChannel(VoiceSettings(webhooks=twilio_webhooks(settings), account=account, config=config,
                                      desk=lambda: desk))


ChannelBuilder = Callable[[Settings, web.Application], Channel]
CHANNELS: tuple[ChannelBuilder, ...] = (_webchat, _twilio_messaging, _twilio_voice)


def build_channels(settings: Settings, app: web.Application) -> list[Channel]:
    """Every channel, built when the app is (their routes are added then); they start with the app."""
    return [build(settings, app) for build in CHANNELS]
