"""Replies that ride in a webhook's TwiML answer instead of a REST call (messaging and voice alike)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sessions.models import Message


class ReplyCollector:
    """Outbound messages of conversations whose inbound webhook is still waiting for its TwiML answer."""

    def __init__(self) -> None:
        self._open: dict[str, list[Message]] = {}

    @contextlib.contextmanager
    def collecting(self, conversation_id: str) -> Iterator[list[Message]]:
        replies: list[Message] = []
        self._open[conversation_id] = replies
        try:
            yield replies
        finally:
            if self._open.get(conversation_id) is replies:
                del self._open[conversation_id]

    def take(self, conversation_id: str, message: Message) -> bool:
        replies = self._open.get(conversation_id)
        if replies is None:
            return False
        replies.append(message)
        return True
