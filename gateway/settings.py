"""All configuration, read once from the environment (and an optional ``.env``) and validated at start-up."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway.demo_twilio import (
    DEMO_ACCOUNT_SID,
    DEMO_API_PORT,
    DEMO_AUTH_TOKEN,
    DEMO_SMS_FROM,
    DEMO_VOICE_FROM,
    DEMO_WHATSAPP_FROM,
)

DEMO_KNOWLEDGE_BASE = Path(__file__).parent / "bots" / "kb" / "demo_shop.yaml"
DEMO_RULES = Path(__file__).parent / "rules" / "demo_shop"


class Settings(BaseSettings):
    """Every setting is listed, with its default, in README.md ("Settings")."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # A client has this long from connecting to send a whole request head (slow-header clients), and an idle
    # kept-alive connection is closed after the keep-alive time (longer than a load balancer's, usually 60 s).
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    http_keepalive_seconds: float = Field(75.0, gt=0, le=3600)
    redis_url: str | None = None
    redis_max_connections: int = Field(64, ge=2, le=10_000)
    redis_namespace: str = Field("hg", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    data_dir: Path = Path("var")
    allowed_origins: Annotated[frozenset[str], NoDecode] = frozenset(
        {"http://localhost:8080", "http://127.0.0.1:8080"}
    )
    max_message_chars: int = Field(4000, ge=1, le=100_000)
    # Abuse limits (docs/security.md), counted in Redis so they hold across instances.
    chat_messages_per_minute: int = Field(30, ge=1, le=100_000)
    chat_message_burst: int = Field(20, ge=1, le=100_000)
    chat_new_conversations_per_hour_per_address: int = Field(20, ge=1, le=1_000_000)
    max_messages_per_conversation: int = Field(2000, ge=10, le=1_000_000)
    # Proxies whose X-Forwarded-For is believed (addresses or networks); unset: the peer is the client.
    trusted_proxies: Annotated[tuple[IPv4Network | IPv6Network, ...], NoDecode] = ()
    conversation_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    identity_secret: SecretStr | None = None
    bot: Literal["faq", "http"] = "faq"
    faq_knowledge_base: Path = DEMO_KNOWLEDGE_BASE
    bot_http_url: HttpUrl | None = None
    bot_http_token: SecretStr | None = None
    bot_http_timeout_seconds: float = Field(5.0, gt=0, le=60)
    bot_http_fallback_text: str = (
        "Sorry, I can't answer that right now. Please try again in a moment."
    )
    rules_dir: Path = DEMO_RULES
    # Outcome records and their day counters for `handoff-gateway review` (docs/review.md); off, nothing is
    # recorded (what the web chat benchmark compares against).
    review_recording: bool = True
    review_retention_days: int = Field(400, gt=0, le=3660)
    # A conversation with the bot that has been quiet this long has ended with the bot (contained, or left).
    review_idle_minutes: int = Field(30, ge=1, le=7 * 24 * 60)
    offer_timeout_seconds: float = Field(30.0, ge=5, le=600)
    return_window_seconds: float = Field(1800.0, ge=0, le=7 * 24 * 3600)
    # For demos and trials: the time business hours and callbacks follow starts here (ISO 8601 with an
    # offset) and runs this many times as fast; offers, heartbeats and expiry keep real time.
    business_clock_start: AwareDatetime | None = None
    business_clock_speed: float = Field(1.0, ge=1, le=3600)
    # Twilio messaging: the public URL Twilio calls (its signature covers it) and the account's auth token.
    public_url: HttpUrl | None = None
    twilio_account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = None
    twilio_api_base_url: HttpUrl = HttpUrl("https://api.twilio.com")
    # The business numbers replies are sent from (E.164), when not answered inside the webhook.
    twilio_sms_from: str | None = Field(None, pattern=r"^\+[1-9]\d{6,14}$")
    twilio_whatsapp_from: str | None = Field(None, pattern=r"^\+[1-9]\d{6,14}$")
    # An approved WhatsApp template for replies more than 24 hours after the customer's last message.
    twilio_whatsapp_template_sid: str | None = Field(None, pattern=r"^HX[0-9a-fA-F]{32}$")
    # A candidate rule set decided on every live bot turn next to RULES_DIR, without acting: where they
    # disagree is recorded for `review --shadow` (docs/rules.md#shadow-rules). Promote it with a reload.
    rules_shadow_dir: Path | None = None
    # `make run` sets this: Twilio settings default to the terminal simulator's (gateway/simulator.py).
    demo_twilio: bool = False
    # The same phone number on SMS and WhatsApp is one customer (their history shows to agents as one).
    link_sms_and_whatsapp: bool = False
    # How long a webhook waits for the bot to answer in its TwiML; a slower answer goes by REST instead
    # (Twilio gives up on a webhook after 15 seconds).
    twilio_reply_budget_seconds: float = Field(5.0, gt=0, le=10)
    # Voice: the business number agents' phones show when the desk calls them (E.164). Unset, no agent is
    # ever dialled, so a call can reach the bot but no person.
    twilio_voice_from: str | None = Field(None, pattern=r"^\+[1-9]\d{6,14}$")
    voice_hold_audio_url: HttpUrl | None = None
    voice_announce_seconds: int = Field(45, ge=10, le=600)
    voice_reply_budget_seconds: float = Field(3.0, gt=0, le=10)
    voice_agent_ring_seconds: int = Field(25, ge=5, le=120)
    # An agent who answered an offered call keeps the offer this long, to hear the brief and press 1.
    voice_agent_answer_seconds: int = Field(60, ge=5, le=300)
    voice_say_voice: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    sms_help_text: str = Field("Reply here to chat with our support team. Reply STOP to opt out.",
                               min_length=1, max_length=1600)
    helpdesk_webhook_url: HttpUrl | None = None
    helpdesk_webhook_secret: SecretStr | None = None
    admin_token: SecretStr | None = None
    # GET /metrics: with a token, only scrapers that send it; without, only direct loopback callers.
    metrics_token: SecretStr | None = None
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return tuple(ip_network(p.strip(), strict=False) for p in value.split(",") if p.strip())
            except ValueError as exc:
                raise ValueError(f"not an address or network: {exc}") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value or None

    @field_validator("faq_knowledge_base")
    @classmethod
    def _check_kb(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("rules_dir", "rules_shadow_dir")
    @classmethod
    def _check_rules_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"no such directory: {value}")
        return value

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @model_validator(mode="before")
    @classmethod
    def _demo_twilio(cls, data: Any) -> Any:
        """DEMO_TWILIO=1 without a real TWILIO_AUTH_TOKEN: the simulator's token, numbers and API stand-in."""
        if not isinstance(data, dict) or str(data.get("demo_twilio", "")).lower() not in {"1", "true", "yes"}:
            return data
        if data.get("twilio_auth_token") or data.get("twilio_account_sid"):
            return data
        public = str(data.get("public_url") or "")
        if public and not public.startswith(("http://localhost", "http://127.0.0.1")):
            # A real public address: never sign with the published demo token there.
            return data
        port = data.get("port", 8080)
        demo = {"public_url": f"http://localhost:{port}", "twilio_auth_token": DEMO_AUTH_TOKEN,
                "twilio_account_sid": DEMO_ACCOUNT_SID, "twilio_sms_from": DEMO_SMS_FROM,
                "twilio_whatsapp_from": DEMO_WHATSAPP_FROM, "twilio_voice_from": DEMO_VOICE_FROM,
                "twilio_api_base_url": f"http://127.0.0.1:{DEMO_API_PORT}"}
        return {**demo, **{k: v for k, v in data.items() if v not in (None, "")}}

    @model_validator(mode="after")
    def _check_twilio(self) -> Settings:
        if self.public_url is not None and self.twilio_auth_token is not None:
            if self.twilio_account_sid is None:
                raise ValueError("TWILIO_ACCOUNT_SID is required with Twilio webhooks: replies outside a "
                                 "webhook's answer (agents) are sent through Twilio's REST API")
            if self.twilio_sms_from is None and self.twilio_whatsapp_from is None:
                raise ValueError("set TWILIO_SMS_FROM or TWILIO_WHATSAPP_FROM (replies' sending number)")
        return self

    @model_validator(mode="after")
    def _check_bot(self) -> Settings:
        if self.bot == "http" and self.bot_http_url is None:
            raise ValueError("BOT_HTTP_URL is required when BOT=http")
        return self


class ConfigError(Exception):
    """A setting is wrong; the message is one line that names it."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:
            raise ConfigError(message) from None
        value = first.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        raise ConfigError(f"{str(first['loc'][0]).upper()}: {message}{shown}") from None
