"""Puts any bot (a team's own, an LLM service) behind the gateway: each turn is POSTed as JSON.

The request and response formats are in docs/http-bot.md. A slow, failing or malformed bot never breaks the
conversation: the customer gets the fallback reply and the turn counts as a failed one.
"""

from __future__ import annotations

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sessions.models import BotTurn, Conversation, Message

log = structlog.get_logger(__name__)


class HttpBotReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1, max_length=4000)
    intent: str | None = None
    family: str | None = None
    confidence: float = Field(1.0, ge=0, le=1)
    resolved: bool = False
    articles: list[str] = Field(default_factory=list)
    fields: dict[str, str] = Field(default_factory=dict)


def turn_request(conversation: Conversation, message: Message) -> dict[str, object]:
    """The JSON body of one turn. Customer attributes are split into verified and claimed ones."""
    customer = conversation.customer
    profile = customer.model_dump(include={"external_id", "name", "email", "tier", "language", "country"},
                                  exclude_none=True)
    return {
        "conversation": {
            "id": conversation.id,
            "channel": conversation.channel,
            "state": conversation.state.value,
            "last_intent": conversation.last_intent,
            "failed_bot_turns": conversation.signals.failed_turns,
        },
        "customer": {
            "id": customer.id,
            "verified": {k: v for k, v in profile.items() if k in customer.verified_fields},
            "claimed": {k: v for k, v in profile.items() if k not in customer.verified_fields},
        },
        "message": {"id": message.id, "text": message.text, "ts": message.ts.isoformat(),
                    "attachments": [a.model_dump(exclude_none=True) for a in message.attachments]},
    }


class HttpBot:
    name = "http"
    waits_on_io = True

    def __init__(
        self, url: str, timeout_seconds: float, fallback_text: str, token: str | None = None
    ) -> None:
        self.url = url
        self.fallback_text = fallback_text
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_seconds), headers=headers, raise_for_status=True
        )

    async def respond(self, conversation: Conversation, message: Message) -> BotTurn:
        try:
            async with self._session.post(self.url, json=turn_request(conversation, message)) as response:
                reply = HttpBotReply.model_validate_json(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("bot.http_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return self._fallback()
        except ValidationError as exc:
            log.warning("bot.http_bad_reply", error=exc.errors()[0]["msg"])
            return self._fallback()
        return BotTurn(**reply.model_dump())

    def _fallback(self) -> BotTurn:
        return BotTurn(text=self.fallback_text, fallback=True)

    async def aclose(self) -> None:
        await self._session.close()
