"""Every URL of ours that the voice channel hands Twilio inside TwiML or a REST call.

Each carries the conversation id (``c``), never relying on a CallSid: an agent's leg and a transfer's leg
have CallSids of their own. Absolute, on PUBLIC_URL, since Twilio signs the URL it calls.
"""

from __future__ import annotations

from urllib.parse import quote_plus, urlencode

from channels.twilio.webhooks import TwilioWebhooks

BASE = "/twilio/voice"


class VoiceUrls:
    def __init__(self, webhooks: TwilioWebhooks) -> None:
        self.webhooks = webhooks

    def _url(self, path: str, **query: str | int) -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        return self.webhooks.absolute(f"{BASE}{path}{suffix}")

    def turn(self, cid: str, n: int, silences: int = 0) -> str:
        # Every prompt's URL: spelt out as urlencode() would, without its general-purpose loop.
        suffix = f"&s={silences}" if silences else ""
        return self.webhooks.absolute(f"{BASE}/turn?c={quote_plus(cid)}&n={n}{suffix}")

    def poll(self, cid: str, n: int, message_id: str, k: int) -> str:
        return self._url("/poll", c=cid, n=n, m=message_id, k=k)

    def wait(self, cid: str) -> str:
        return self._url("/wait", c=cid)

    def resume(self, cid: str, why: str, agent_id: str | None = None, **extra: str | int) -> str:
        return self._url("/resume", c=cid, why=why, **({"a": agent_id} if agent_id else {}), **extra)

    def after_room(self, cid: str) -> str:
        return self._url("/resume", c=cid, why="left_room")

    def room_events(self, cid: str) -> str:
        return self._url("/conference", c=cid)

    def recorded(self, cid: str) -> str:
        return self._url("/recorded", c=cid)

    def hold(self) -> str:
        return self._url("/hold")

    def notice(self, key: str) -> str:
        return self._url("/notice", t=key)

    def agent(self, cid: str, agent_id: str, kind: str) -> str:
        return self._url("/agent", c=cid, a=agent_id, k=kind)

    def agent_key(self, cid: str, agent_id: str, kind: str) -> str:
        return self._url("/agent/key", c=cid, a=agent_id, k=kind)

    def agent_status(self, cid: str, agent_id: str, kind: str) -> str:
        return self._url("/agent/status", c=cid, a=agent_id, k=kind)

    def intake(self, cid: str, step: str, hold: bool, silences: int = 0) -> str:
        """A callback being arranged with keys: the step asked, whether the caller may go back to holding,
        and the silences so far (counted in the URL, as a turn's are)."""
        return self._url("/callback/intake", c=cid, step=step, h=int(hold), s=silences)

    def callback(self, path: str, cid: str, attempt: int, **extra: str) -> str:
        """A callback attempt's legs (``/callback/...``): the attempt's number travels with every step."""
        return self._url(f"/callback{path}", c=cid, n=attempt, **extra)
