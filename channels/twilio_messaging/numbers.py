"""Which conversation a phone number is writing to, remembered in this process between its messages.

A number's open conversation is named by a Redis key; reading it costs a round trip per message. This
process remembers the answer instead, which is safe because a number's conversation is only ever replaced
after it expired: the message's own append then reports it missing and the key is read again. The key is
kept alive longer than its conversation (by twice the refresh interval), and re-read (and renewed) at least
once per interval, so it never expires while the conversation lives, whichever instance the texts reach.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentConversations:
    """A bounded, least-recently-used map of a number's key to its conversation id."""

    def __init__(
        self, conversation_ttl_seconds: int, *, size: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_seconds = min(conversation_ttl_seconds / 4, 900.0)
        # How long the number's key lives after each renewal: its conversation's lifetime plus a margin.
        self.key_ttl_seconds = conversation_ttl_seconds + int(2 * self.refresh_seconds) + 1
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str) -> str | None:
        """The conversation id, or None when not known here or when the key is due a renewal."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() - entry[1] > self.refresh_seconds:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def renewed(self, key: str, conversation_id: str) -> None:
        """The key was just read (or written) and its lifetime renewed."""
        self._entries[key] = (conversation_id, self._clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
