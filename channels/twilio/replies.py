"""Replies that ride in a webhook's TwiML answer instead of a REST call (messaging and voice alike)."""

from __future__ import annotations

from types import TracebackType

from sessions.models import Message


class ReplyCollector:
    """Outbound messages of conversations whose inbound webhook is still waiting for its TwiML answer."""

    def __init__(self) -> None:
        self._open: dict[str, list[Message]] = {}

    def collecting(self, conversation_id: str) -> _Collecting:
        """``with collector.collecting(cid) as replies:`` the conversation's outbound messages meanwhile."""
        return _Collecting(self._open, conversation_id)

    def take(self, conversation_id: str, message: Message) -> bool:
        replies = self._open.get(conversation_id)
        if replies is None:
            return False
        replies.append(message)
        return True


class _Collecting:
    """One webhook's collection (a class, not a generator: every turn of every call opens one)."""

    __slots__ = ("_conversation_id", "_open", "_replies")

    def __init__(self, open_: dict[str, list[Message]], conversation_id: str) -> None:
        self._open = open_
        self._conversation_id = conversation_id
        self._replies: list[Message] = []

    def __enter__(self) -> list[Message]:
        self._open[self._conversation_id] = self._replies
        return self._replies

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._open.get(self._conversation_id) is self._replies:
            del self._open[self._conversation_id]
