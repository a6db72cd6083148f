"""Sending SMS and WhatsApp messages through Twilio's REST API with the twilio package's async client.

Used for every message no webhook is waiting to carry in TwiML: an agent's reply, a queue update, a reply
too slow for the webhook. The API's base URL is a setting, so tests and regional edges can point elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channels.twilio_messaging.form import WHATSAPP_PREFIX

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    account_sid: str
    auth_token: str
    api_base_url: str
    sms_from: str | None
    whatsapp_from: str | None
    # Where Twilio reports each message's delivery (queued, sent, delivered, undelivered, failed).
    status_callback: str | None = None


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


class TwilioSender:
    def __init__(self, config: OutboundConfig) -> None:
        self.config = config
        self._http = AsyncTwilioHttpClient()
        # environment={}: TWILIO_REGION / TWILIO_EDGE in the environment must not rewrite the base URL.
        self._client = Client(config.account_sid, config.auth_token, http_client=self._http, environment={})
        self._client.api.base_url = config.api_base_url.rstrip("/")

    def sender_for(self, channel: str) -> str | None:
        if channel == "whatsapp":
            return f"{WHATSAPP_PREFIX}{self.config.whatsapp_from}" if self.config.whatsapp_from else None
        return self.config.sms_from

    async def send(self, channel: str, to: str, body: str) -> SendResult:
        sender = self.sender_for(channel)
        if sender is None:
            return SendResult(None, f"no sending number configured for {channel}")
        address = f"{WHATSAPP_PREFIX}{to}" if channel == "whatsapp" else to
        extra = {"status_callback": self.config.status_callback} if self.config.status_callback else {}
        try:
            created = await self._client.messages.create_async(to=address, from_=sender, body=body, **extra)
        except TwilioRestException as exc:
            retry = exc.status == 429 or exc.status >= 500
            return SendResult(None, f"Twilio refused the message: {exc.msg}", exc.status, retryable=retry)
        except (TwilioException, OSError, TimeoutError) as exc:
            return SendResult(None, f"Twilio could not be reached: {type(exc).__name__}", retryable=True)
        except Exception as exc:  # the client library failing must not fail the agent's request
            log.exception("twilio.send_crashed")
            return SendResult(None, f"sending failed: {type(exc).__name__}")
        return SendResult(str(created.sid))

    async def send_template(self, to: str, content_sid: str, variables: dict[str, str]) -> SendResult:
        """An approved WhatsApp template: ContentSid with ContentVariables as a JSON string, and no Body."""
        sender = self.sender_for("whatsapp")
        if sender is None:
            return SendResult(None, "no sending number configured for whatsapp")
        try:
            created = await self._client.messages.create_async(
                to=f"{WHATSAPP_PREFIX}{to}", from_=sender, content_sid=content_sid,
                content_variables=json.dumps(variables),
            )
        except TwilioRestException as exc:
            return SendResult(None, f"Twilio refused the template: {exc.msg}", exc.status)
        except Exception as exc:  # as in send(): never fail the caller
            return SendResult(None, f"sending failed: {type(exc).__name__}")
        return SendResult(str(created.sid))

    async def aclose(self) -> None:
        await self._http.close()
