"""Which conversation a phone number is writing to: a Redis key per number, remembered in this process.

A number's open conversation is named by a key. A conversation is opened in full before the key names it,
and the key is only replaced once its conversation is gone (expired), so an id read once stays right until
an append reports the conversation missing: then the key is read again (another instance may already have
opened the next one). This process therefore remembers the id instead of reading the key for every text.

The key lives twice as long as a conversation does after its last activity, and is renewed when the number
texts (at least every refresh interval, on whichever instance) and when anything is sent to it through the
REST API (agents' replies), so it outlives its conversation: a key that names an expired conversation only
costs one failed append, one that vanished under a live conversation would split it in two.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from sessions.keys import Keys


def conversation_key(keys: Keys, channel: str, number: str) -> str:
    return keys.identity(channel, number) + ":conversation"


def key_ttl_seconds(conversation_ttl_seconds: int) -> int:
    return 2 * conversation_ttl_seconds


class RecentConversations:
    """A bounded, least-recently-used map of a number's key to its conversation id."""

    def __init__(
        self, conversation_ttl_seconds: int, *, size: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_seconds = min(conversation_ttl_seconds / 4, 900.0)
        self.key_ttl_seconds = key_ttl_seconds(conversation_ttl_seconds)
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
