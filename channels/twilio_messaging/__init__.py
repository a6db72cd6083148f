"""SMS and WhatsApp through Twilio's messaging webhooks."""

from channels.twilio.replies import ReplyCollector
from channels.twilio_messaging.adapter import (
    MessagingAdapter,
    OptOuts,
    SmsAdapter,
    WhatsAppAdapter,
)
from channels.twilio_messaging.channel import TwilioMessagingChannel, TwilioMessagingSettings
from channels.twilio_messaging.webhook import MessagingConfig, MessagingWebhook

__all__ = [
    "MessagingAdapter", "MessagingConfig", "MessagingWebhook", "OptOuts", "ReplyCollector", "SmsAdapter",
    "TwilioMessagingChannel", "TwilioMessagingSettings", "WhatsAppAdapter",
]
