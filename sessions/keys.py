"""Every Redis key and channel name the project uses, built in one place.

A conversation's keys share the hash tag ``{c:<id>}``, so a Lua script over them runs on one Cluster slot;
a desk's keys (queues, and in time agents and offers) share ``{d:<desk>}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "hg"

    def _conv(self, conversation_id: str) -> str:
        return f"{self.namespace}:{{c:{conversation_id}}}"

    def conversation(self, conversation_id: str) -> str:
        return f"{self._conv(conversation_id)}:state"

    def transcript(self, conversation_id: str) -> str:
        return f"{self._conv(conversation_id)}:msgs"

    def events(self, conversation_id: str) -> str:
        return f"{self._conv(conversation_id)}:events"

    def external_id(self, conversation_id: str, external_id: str) -> str:
        return f"{self._conv(conversation_id)}:ext:{external_id}"

    def live_channel(self, conversation_id: str) -> str:
        """Pub/sub channel that only speeds up delivery; the transcript stream is the record."""
        return f"{self._conv(conversation_id)}:live"

    def message_rate(self, conversation_id: str) -> str:
        """The token bucket of a conversation's customer messages (every socket of it, on any instance)."""
        return f"{self._conv(conversation_id)}:rate"

    def new_conversation_rate(self, address: str) -> str:
        """The token bucket of new web chat conversations opened from one client address."""
        return f"{self.namespace}:{{ra:{address}}}:new-conversations"

    def call(self, conversation_id: str) -> str:
        """A phone conversation's call: the caller's CallSid, the agent legs, the conference, the wait."""
        return f"{self._conv(conversation_id)}:call"

    def customer(self, customer_id: str) -> str:
        return f"{self.namespace}:{{cu:{customer_id}}}:customer"

    def shadow_counts(self, day: str) -> str:
        """A day's shadow-rules verdicts counted (handoff/shadow.py); the day's own tag spreads the days over
        Cluster slots, and its two keys share one."""
        return f"{self.namespace}:{{rv:shadow:{day}}}:counts"

    def shadow_samples(self, day: str) -> str:
        """A day's latest disagreements between the live and the candidate rules, capped."""
        return f"{self.namespace}:{{rv:shadow:{day}}}:samples"

    def customer_callback(self, customer_id: str) -> str:
        """The conversation holding the customer's latest callback promise, so a call from them can offer to
        cancel it (checked against the conversation when read: the promise may have been kept since)."""
        return f"{self.namespace}:{{cu:{customer_id}}}:callback"

    def identity(self, channel: str, address: str) -> str:
        return f"{self.namespace}:{{i:{channel}:{address}}}:customer-id"

    def _desk(self, desk: str) -> str:
        return f"{self.namespace}:{{d:{desk}}}"

    def queue(self, desk: str, queue: str) -> str:
        """A desk's queue: conversation ids ordered by priority, then by how long they have waited."""
        return f"{self._desk(desk)}:queue:{queue}"

    def backlog(self, desk: str, queue: str) -> str:
        """A queue's asynchronous follow-ups (after hours, written-only channels), ordered like the queue."""
        return f"{self._desk(desk)}:backlog:{queue}"

    def agents(self, desk: str) -> str:
        """Agent id -> profile JSON."""
        return f"{self._desk(desk)}:agents"

    def agent_tokens(self, desk: str) -> str:
        """SHA-256 of an agent's API token -> agent id (the token itself is never stored)."""
        return f"{self._desk(desk)}:agent-tokens"

    def agent_state(self, desk: str, agent_id: str) -> str:
        """Presence, capacity, active count and idle-since of one agent."""
        return f"{self._desk(desk)}:agent:{agent_id}"

    def agent_conversations(self, desk: str, agent_id: str) -> str:
        return f"{self._desk(desk)}:agent:{agent_id}:conversations"

    def presence(self, desk: str) -> str:
        """Agents online or away, scored by when their heartbeat expires (ms)."""
        return f"{self._desk(desk)}:presence"

    def offers(self, desk: str) -> str:
        """Conversation id -> "agent|queue score|queue" while it is offered to one agent."""
        return f"{self._desk(desk)}:offers"

    def offer_deadlines(self, desk: str) -> str:
        """Offered conversations by when the offer lapses (ms): the durable timer the sweepers pop."""
        return f"{self._desk(desk)}:offer-deadlines"

    def passed_over(self, desk: str, conversation_id: str) -> str:
        """Agents who let an offer of this conversation lapse or declined it: offered to someone else next."""
        return f"{self._desk(desk)}:passed:{conversation_id}"

    def agent_inbox(self, desk: str, agent_id: str) -> str:
        """Pub/sub channel of one agent's desk events (offers, assignments); the desk state is the record."""
        return f"{self._desk(desk)}:agent:{agent_id}:inbox"

    def agent_control(self, desk: str) -> str:
        """Pub/sub channel of sign-in changes (an agent removed, a token revoked): every instance re-checks
        and closes the sockets concerned. Each socket also re-checks on its own every few seconds."""
        return f"{self._desk(desk)}:agent-control"

    def handle_times(self, desk: str, queue: str) -> str:
        """The latest handle times (seconds) of a queue's conversations, newest first: the ETA's basis."""
        return f"{self._desk(desk)}:handle-times:{queue}"

    def sla_sent(self, desk: str) -> str:
        """Conversation id -> "position|epoch ms" of the last queue update its customer was sent."""
        return f"{self._desk(desk)}:sla-sent"

    def jobs_due(self, desk: str) -> str:
        """Durable delayed jobs by due time (ms), popped with a lease."""
        return f"{self._desk(desk)}:jobs-due"

    def jobs(self, desk: str) -> str:
        """Job id -> JSON (kind, payload, attempt)."""
        return f"{self._desk(desk)}:jobs"

    def callbacks(self, desk: str) -> str:
        """Conversations with a callback promised, by when its next attempt is due (ms): the agents' list."""
        return f"{self._desk(desk)}:callbacks"

    def callbacks_due(self, desk: str) -> str:
        """The same conversations by due time (ms), popped with a lease when their slot begins."""
        return f"{self._desk(desk)}:callbacks-due"

    def assignments(self, desk: str) -> str:
        """Conversation id -> the agent who holds it: the one place that says who has a conversation."""
        return f"{self._desk(desk)}:assignments"

    def twilio_status(self, sid: str, status: str) -> str:
        """Claimed once per Twilio status callback (a MessageSid's delivery, a CallSid's progress)."""
        return f"{self.namespace}:twilio-status:{sid}:{status}"

    def twilio_message(self, sid: str) -> str:
        """A sent message's Twilio SID -> "conversation id|message id": delivery reports name only the SID."""
        return f"{self.namespace}:twilio-sid:{sid}"

    def live_control(self) -> str:
        """A standing subscription of every live feed, so its connection is open before anyone is followed."""
        return f"{self.namespace}:live-control"

    def _review_day(self, day: str) -> str:
        """One hash tag per team-local day (``{rv:2026-11-30}``), so a year of days spreads over Cluster slots
        while one day's record and counters are written together."""
        return f"{self.namespace}:{{rv:{day}}}"

    def review_records(self, day: str) -> str:
        """The day's outcome records (a stream of JSON), kept REVIEW_RETENTION_DAYS for export."""
        return f"{self._review_day(day)}:records"

    def review_buckets(self, day: str) -> str:
        """The day's counters, ``figure|dimension|value`` -> count or sum: what `review` reads."""
        return f"{self._review_day(day)}:buckets"

    def review_idle(self) -> str:
        """Conversations with the bot by when to look whether they went quiet (ms): a bot-only ending has no
        event of its own, so the review sweeper records it when nothing happened for a while."""
        return f"{self.namespace}:{{rv:idle}}:due"

    def review_last_contact(self, customer_id: str) -> str:
        """The customer's latest recorded conversation (ended at, outcome), for 7-day repeat contact; under
        the customer's own tag, on every channel the customer is linked on."""
        return f"{self.namespace}:{{cu:{customer_id}}}:review-last"

    def conversation_index(self) -> str:
        return f"{self.namespace}:conversations"

    def pattern(self) -> str:
        """Every key of this namespace, for tests that clean up after themselves."""
        return f"{self.namespace}:*"
