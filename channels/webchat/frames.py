"""The JSON frames of the web chat protocol: parsing what clients send, building what the server sends."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sessions.models import Conversation, ConversationState, Message

CLIENT_ID_MAX = 128


class MessageFrame(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["message"]
    text: str
    client_id: str = Field(min_length=1, max_length=CLIENT_ID_MAX, pattern=r"^[A-Za-z0-9_.:-]+$")


class PingFrame(BaseModel):
    type: Literal["ping"]


class TypingFrame(BaseModel):
    """The customer is typing: shown to the agent, never stored."""

    type: Literal["typing"]


ClientFrame = MessageFrame | PingFrame | TypingFrame
_FRAME_TYPES: dict[str, type[MessageFrame] | type[PingFrame] | type[TypingFrame]] = {
    "message": MessageFrame, "ping": PingFrame, "typing": TypingFrame,
}


@dataclass(frozen=True, slots=True)
class FrameError:
    code: str
    detail: str
    # Echoed when the refused frame named one, so the client knows which message will never be stored.
    client_id: str | None = None

    def frame(self) -> dict[str, Any]:
        frame = {"type": "error", "code": self.code, "detail": self.detail}
        if self.client_id:
            frame["client_id"] = self.client_id
        return frame


def parse_client_frame(raw: str, max_text_chars: int) -> ClientFrame | FrameError:
    """Turn one text frame into a typed frame, or a FrameError that says exactly what is wrong."""
    try:
        data = json.loads(raw)
    except ValueError:
        return FrameError("invalid_json", "Frames must be JSON objects.")
    except RecursionError:  # nested deeper than the parser goes
        return FrameError("invalid_json", "The frame is nested too deeply.")
    if not isinstance(data, dict):
        return FrameError("invalid_json", "Frames must be JSON objects.")
    kind = data.get("type")
    model = _FRAME_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(_FRAME_TYPES))
        return FrameError("unknown_type", f"Unknown frame type {kind!r}; expected one of: {known}.")
    raw_client_id = data.get("client_id")
    client_id = raw_client_id[:CLIENT_ID_MAX] if isinstance(raw_client_id, str) else None
    try:
        frame = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "frame"
        return FrameError("invalid_frame", f"Field {field!r}: {first['msg']}.", client_id)
    if isinstance(frame, MessageFrame):
        if not _is_unicode(frame.text):
            return FrameError("invalid_json", "The text has an unpaired surrogate (\\ud800-\\udfff); it is "
                              "not Unicode text.", client_id)
        if not frame.text.strip():
            return FrameError("empty_text", "A message needs some text.", client_id)
        if len(frame.text) > max_text_chars:
            return FrameError(
                "text_too_long", f"A message may have at most {max_text_chars} characters; this has "
                f"{len(frame.text)}.", client_id,
            )
    return frame


def _is_unicode(text: str) -> bool:
    """JSON lets ``"\\ud800"`` through as a lone surrogate, which no UTF-8 store or client can take."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_frame(message: Message) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "message",
        "id": message.id,
        "sender": message.sender.value,
        "text": message.text,
        "ts": message.ts.isoformat(),
    }
    if message.client_id:
        frame["client_id"] = message.client_id
    if message.attachments:
        frame["attachments"] = [a.model_dump(exclude_none=True) for a in message.attachments]
    offer = message.channel_metadata.get("callback_offer")
    if offer is not None:  # the widget shows a form (number, time) over the text's numbered choices
        frame["callback_offer"] = offer
    return frame


def handoff_frame(status: dict[str, Any], text: str | None = None) -> dict[str, Any]:
    return {"type": "handoff", **status, "text": text}


def session_frame(conversation: Conversation, token: str, history: list[Message]) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "session",
        "conversation_id": conversation.id,
        "token": token,
        "state": conversation.state.value,
        "history": [message_frame(m) for m in history],
    }
    if conversation.handoff is not None and conversation.state is not ConversationState.BOT:
        frame["handoff"] = conversation.handoff.status(conversation.state)
    return frame


def pending_session_frame() -> dict[str, Any]:
    """The first frame of a new chat: no conversation yet. It is opened by the first message, and a second
    session frame then carries its id and token."""
    return {"type": "session", "conversation_id": None, "token": None, "state": "bot", "history": []}


def rate_limited_frame(detail: str, retry_after: float, client_id: str | None) -> dict[str, Any]:
    frame = FrameError("rate_limited", detail, client_id).frame()
    frame["retry_after_seconds"] = max(1, math.ceil(retry_after))
    return frame


def ack_frame(client_id: str, message_id: str) -> dict[str, Any]:
    return {"type": "ack", "client_id": client_id, "id": message_id}
