"""Sending SMS and WhatsApp messages through Twilio's REST API, with the shared TwilioRest client.

Used for every message no webhook is waiting to carry in TwiML: an agent's reply, a queue update, a reply
too slow for the webhook. The API's base URL is a setting, so tests and regional edges can point elsewhere;
TWILIO_REGION / TWILIO_EDGE in the environment never move it (TwilioRest clears both). Each request is
bounded by `request_timeout`, and what failed is classified there: unreachable, dropped, timed out, 429 or
5xx is retryable (the adapter retries it as a durable job, at the risk of a duplicate text); a 4xx is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.twilio.rest import FailureListener, RestResult, TwilioRest
from channels.twilio_messaging.form import WHATSAPP_PREFIX


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    account_sid: str
    auth_token: str
    api_base_url: str
    sms_from: str | None
    whatsapp_from: str | None
    # Where Twilio reports each message's delivery (queued, sent, delivered, undelivered, failed).
    status_callback: str | None = None
    # Seconds one REST request may take before it counts as Twilio being unreachable (retryable).
    request_timeout: float = 15.0


@dataclass(frozen=True, slots=True)
class SendResult:
    sid: str | None
    error: str | None = None
    status: int | None = None
    reason_code: str | None = None
    # Worth trying again later: Twilio was unreachable, rate-limited us (429) or failed (5xx).
    retryable: bool = False

    @property
    def ok(self) -> bool:
        return self.sid is not None

    @classmethod
    def of(cls, result: RestResult) -> SendResult:
        return cls(result.sid, result.error, result.status, retryable=result.retryable)


class TwilioSender:
    def __init__(self, config: OutboundConfig, on_failure: FailureListener | None = None) -> None:
        self.config = config
        self.rest = TwilioRest(config.account_sid, config.auth_token, config.api_base_url,
                               request_timeout=config.request_timeout, on_failure=on_failure)

    def sender_for(self, channel: str) -> str | None:
        if channel == "whatsapp":
            return f"{WHATSAPP_PREFIX}{self.config.whatsapp_from}" if self.config.whatsapp_from else None
        return self.config.sms_from

    async def send(self, channel: str, to: str, body: str) -> SendResult:
        sender = self.sender_for(channel)
        if sender is None:
            return SendResult(None, f"no sending number configured for {channel}")
        address = f"{WHATSAPP_PREFIX}{to}" if channel == "whatsapp" else to
        return SendResult.of(await self.rest.send_message(address, sender, body, self.config.status_callback))

    async def send_template(self, to: str, content_sid: str, variables: dict[str, str]) -> SendResult:
        """An approved WhatsApp template: ContentSid with ContentVariables as a JSON string, and no Body."""
        sender = self.sender_for("whatsapp")
        if sender is None:
            return SendResult(None, "no sending number configured for whatsapp")
        address = f"{WHATSAPP_PREFIX}{to}"
        return SendResult.of(await self.rest.send_template(address, sender, content_sid, variables))

    async def aclose(self) -> None:
        await self.rest.aclose()
