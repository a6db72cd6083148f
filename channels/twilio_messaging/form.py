"""What Twilio posts for one inbound SMS or WhatsApp message, normalized.

Numbers become E.164 with ``phonenumbers``; WhatsApp's ``whatsapp:`` prefix decides the channel. Media
(NumMedia, MediaUrlN, MediaContentTypeN) become attachments, so a photo with no text is still a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from channels.twilio.forms import FormError, e164
from sessions.models import Attachment

log = structlog.get_logger(__name__)

WHATSAPP_PREFIX = "whatsapp:"
MAX_MEDIA = 10
# The longest body Twilio delivers on each channel: a signed webhook with more was not sent by Twilio as
# a customer's message, and is cut to this rather than stored whole.
MAX_BODY_CHARS = {"sms": 1600, "whatsapp": 4096}


@dataclass(frozen=True, slots=True)
class InboundText:
    message_sid: str
    channel: str
    sender: str  # E.164
    recipient: str
    body: str
    profile_name: str | None = None
    wa_id: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    # The body was longer than the channel allows and was cut to MAX_BODY_CHARS.
    truncated: bool = False


def parse_inbound(form: Mapping[str, str]) -> InboundText:
    sid = form.get("MessageSid") or form.get("SmsMessageSid") or ""
    if not sid.startswith(("SM", "MM")) or not sid.isalnum():
        raise FormError("invalid_message_sid", "MessageSid is missing or malformed.")
    raw_from, raw_to = form.get("From", ""), form.get("To", "")
    whatsapp = raw_from.startswith(WHATSAPP_PREFIX)
    sender = e164(raw_from.removeprefix(WHATSAPP_PREFIX))
    recipient = e164(raw_to.removeprefix(WHATSAPP_PREFIX)) if raw_to else ""
    try:
        count = min(int(form.get("NumMedia", "0") or 0), MAX_MEDIA)
    except ValueError:
        raise FormError("invalid_num_media", "NumMedia must be a number.") from None
    attachments = [
        Attachment(url=url, content_type=form.get(f"MediaContentType{i}") or None)
        for i in range(count)
        if (url := form.get(f"MediaUrl{i}", "")).startswith("https://")
    ]
    body = form.get("Body", "")
    if not body.strip() and not attachments:
        raise FormError("empty_message", "The message has neither text nor media.")
    channel = "whatsapp" if whatsapp else "sms"
    limit = MAX_BODY_CHARS[channel]
    truncated = len(body) > limit
    if truncated:
        log.warning("twilio.body_truncated", message_sid=sid, channel=channel, chars=len(body), kept=limit)
        body = body[:limit]
    return InboundText(
        message_sid=sid,
        channel=channel,
        sender=sender,
        recipient=recipient,
        body=body,
        profile_name=form.get("ProfileName") or None,
        wa_id=form.get("WaId") or None,
        attachments=attachments,
        truncated=truncated,
    )
