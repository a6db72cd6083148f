"""A number's conversation, remembered between texts: renewed on time, bounded in size."""

from __future__ import annotations

from channels.twilio_messaging.numbers import RecentConversations


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_remembered_conversation_is_read_again_once_its_key_is_due_a_renewal() -> None:
    clock = Clock()
    recent = RecentConversations(7 * 24 * 3600, clock=clock)
    assert recent.refresh_seconds == 900 and recent.key_ttl_seconds == 14 * 24 * 3600
    recent.renewed("k", "c1")
    clock.now += 899
    assert recent.get("k") == "c1"
    clock.now += 2  # past the refresh interval since the key was last renewed, not since the last read
    assert recent.get("k") is None


def test_the_key_outlives_its_conversation_whatever_the_ttl() -> None:
    for ttl in (60, 3600, 7 * 24 * 3600):
        recent = RecentConversations(ttl)
        assert recent.refresh_seconds <= ttl / 4 and recent.key_ttl_seconds >= ttl + 2 * recent.refresh_seconds


def test_the_least_recently_used_numbers_are_forgotten_first() -> None:
    recent = RecentConversations(3600, size=2)
    recent.renewed("a", "ca")
    recent.renewed("b", "cb")
    assert recent.get("a") == "ca"  # now the most recently used
    recent.renewed("c", "cc")
    assert recent.get("b") is None and recent.get("a") == "ca" and recent.get("c") == "cc"
    recent.forget("a")
    assert recent.get("a") is None
