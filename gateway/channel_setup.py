"""Which channels this gateway serves, each built from the settings: the one place that knows them all.

Everything else (app.py, the routes, the pipeline, the desk) goes through ``channels.base``'s interfaces,
so adding a channel is a builder here and a package under ``channels/``.
"""

from __future__ import annotations

from collections.abc import Callable

from channels.base import Channel
from channels.twilio.webhooks import TwilioWebhooks
from channels.twilio_messaging import MessagingConfig, TwilioMessagingChannel, TwilioMessagingSettings
from channels.twilio_messaging.outbound import OutboundConfig
from channels.webchat import WebChatChannel, WebChatConfig
from gateway.settings import Settings


def twilio_webhooks(settings: Settings) -> TwilioWebhooks | None:
    """How Twilio's signatures are checked here; None while PUBLIC_URL or TWILIO_AUTH_TOKEN is unset."""
    if settings.public_url is None or settings.twilio_auth_token is None:
        return None
    return TwilioWebhooks(str(settings.public_url), settings.twilio_auth_token.get_secret_value())


def _webchat(settings: Settings) -> Channel:
    secret = settings.identity_secret.get_secret_value() if settings.identity_secret else None
    return WebChatChannel(WebChatConfig(settings.allowed_origins, settings.max_message_chars, secret))


def _twilio_messaging(settings: Settings) -> Channel:
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


CHANNELS: tuple[Callable[[Settings], Channel], ...] = (_webchat, _twilio_messaging)


def build_channels(settings: Settings) -> list[Channel]:
    return [build(settings) for build in CHANNELS]
