"""Messaging rules that carriers and WhatsApp impose: opt-out keywords, message length, the 24-hour window."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
HELP = frozenset({"HELP", "INFO"})
# Twilio refuses longer bodies; split below it, at sentence ends where possible.
MAX_BODY = 1600
WHATSAPP_WINDOW = timedelta(hours=24)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def keyword(text: str) -> str | None:
    """The keyword a message consists of (STOP, START, HELP...), or None: "stop sending me ads" is not one."""
    word = text.strip().strip(".!").upper()
    return word if word in OPT_OUT | OPT_IN | HELP else None


def split_message(text: str, limit: int = MAX_BODY) -> list[str]:
    """Parts of at most ``limit`` characters, cut after a sentence, else at a space, else anywhere."""
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max((m.end() for m in _SENTENCE_END.finditer(window)), default=0)
        if cut == 0:
            cut = window.rfind(" ") + 1 or limit
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        parts.append(text)
    return parts


def inside_whatsapp_window(last_inbound: datetime | None, now: datetime) -> bool:
    """WhatsApp allows free-form replies for 24 hours after the customer's last message."""
    return last_inbound is not None and now - last_inbound < WHATSAPP_WINDOW
