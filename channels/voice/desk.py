"""What the voice channel needs of the agent desk, as an interface the gateway implements.

Channels never import the desk (ARCHITECTURE.md): on a call, an agent's key press is a claim, a hang-up is
a hand-back, and the brief is read from the context package, so the gateway joins the two through this.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from sessions.models import Conversation


class Accepted(StrEnum):
    WON = "won"  # this agent holds the conversation now
    TAKEN = "taken"  # another agent was faster
    GONE = "gone"  # the caller is no longer waiting (hung up, expired)
    UNABLE = "unable"  # this agent cannot take calls now (not online, or at capacity)


class IntakeStep(StrEnum):
    """Where a caller arranging a callback with keys is: asked for the number, then the time; or done."""

    NUMBER = "number"  # press 1 for the number they call from, or key in another, then #
    TIME = "time"  # press the number of a time
    DONE = "done"  # arranged: told when, and the call ends
    DECLINED = "declined"  # no callback: back to their place in the queue, or told goodbye


@dataclass(frozen=True, slots=True)
class CallbackPrompt:
    step: IntakeStep
    say: list[str]


@dataclass(frozen=True, slots=True)
class BookedCallback:
    """A callback the caller arranged earlier (on any channel) and may cancel with 2."""

    conversation_id: str
    reminder: str  # when it is, and how to cancel it


@dataclass(frozen=True, slots=True)
class AgentLine:
    agent_id: str
    name: str
    phone: str | None


class VoiceDesk(Protocol):
    async def agent(self, agent_id: str) -> AgentLine | None: ...

    async def on_the_phone(self, agent_id: str, talking: bool) -> None:
        """An agent's leg joined a caller (``True``) or ended: while they talk they stay present without
        a console (their heartbeat would otherwise run out and hand the caller back mid-call)."""
        ...

    async def brief(self, conversation_id: str) -> list[str]:
        """The context package as sentences for an agent's ear: reason, intent, tier and verified
        attributes, what was collected, the one-line summary, and a transfer's note."""
        ...

    async def accept(self, agent_id: str, conversation_id: str) -> Accepted:
        """The agent pressed 1 on an offered call: the desk's atomic claim."""
        ...

    async def hold_offer(self, agent_id: str, conversation_id: str, seconds: int) -> None:
        """The offered agent answered their phone: the offer stays theirs while they hear the brief (it
        would otherwise lapse mid-sentence). Nothing when it is no longer theirs."""
        ...

    async def pass_offer(self, agent_id: str, conversation_id: str) -> None:
        """The offered agent did not take it (no answer, voicemail, busy, a key other than 1): the offer
        lapses and goes to the next agent."""
        ...

    async def caller_left(self, conversation_id: str) -> None:
        """The caller hung up: abandoned while waiting (with the wait), or the agent is freed."""
        ...

    async def agent_left(self, agent_id: str, conversation_id: str) -> str | None:
        """The agent's leg ended while they held the conversation: back to the head of its queue.
        Returns what the caller is told, or None when the conversation no longer waits for anyone."""
        ...

    async def handover(self, conversation_id: str, from_agent: str, to_agent: str) -> bool:
        """A warm transfer completes: the second agent holds the conversation from now on."""
        ...

    async def transfer_failed(
        self, conversation_id: str, from_agent: str, to_agent: str, reason: str
    ) -> None:
        """The transfer's target did not take it: the first agent keeps the caller and is told."""
        ...

    async def follow_up(self, conversation_id: str) -> None:
        """Nobody can take the call now: it leaves the live queue for the queue's follow-ups (a call
        back), so nobody is left holding."""
        ...

    # -- callbacks arranged on a call, with keys ------------------------------------------------------------
    def takes_callbacks(self, conversation: Conversation) -> bool:
        """A waiting caller may press star for a callback: the queue takes callbacks and none was arranged or
        turned down in this conversation."""
        ...

    def callback_after_seconds(self, conversation: Conversation) -> int | None:
        """The expected wait past which a waiting caller is offered a callback (the queue's
        ``callback_after_seconds`` where it offers one on ``wait_over``), or None."""
        ...

    async def callback_offer(self, conversation_id: str, why: str, eta_seconds: int | None = None
                             ) -> CallbackPrompt | None:
        """Offer a callback for ``why`` (after_hours, unstaffed, asked, wait_over with the expected wait),
        or go on with one the handoff offered: the number question. None when the queue's rules offer none
        (or it was turned down already)."""
        ...

    async def callback_key(self, conversation_id: str, step: IntakeStep, digits: str | None, hold: bool
                           ) -> CallbackPrompt:
        """The keys pressed at ``step`` ("" asks again; None: no answer after the reprompts). ``hold``: the
        caller may go back to waiting in the queue, so no answer means no callback; otherwise (nobody can
        take the call now) no answer to the time arranges the soonest."""
        ...

    async def callback_booked(self, customer_id: str, channel: str) -> BookedCallback | None:
        """The caller's callback still waiting for its time, to remind them of it as the call begins."""
        ...

    async def callback_cancel(self, conversation_id: str, channel: str) -> str:
        """Cancel the booked callback: what the caller hears ("" when it was settled meanwhile)."""
        ...

    # -- callbacks (a conversation on any channel whose customer chose to be called back) -----------------
    async def callback_brief(self, conversation_id: str) -> list[str]:
        """The brief, opened by what kind of call this is: "a callback the customer asked for at 14:05"."""
        ...

    async def callback_step(self, conversation_id: str, attempt: int, step: str, **changes: str) -> bool:
        """Record an attempt's progress (``dialling`` with the agent's CallSid, ``connected`` with the
        customer's). False when the attempt is no longer the current one (cancelled, failed, moved on)."""
        ...

    async def callback_failed(self, conversation_id: str, attempt: int, outcome: str) -> None:
        """The attempt did not reach the customer (busy, no-answer, machine, the agent declined): retried
        later or given up, and the customer told in their channel."""
        ...

    async def callback_greeting(self, conversation_id: str) -> str:
        """What the customer hears when they pick up: who is calling and why, before the agent speaks."""
        ...
