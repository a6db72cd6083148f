"""The Redis store: atomic, idempotent steps, each one round trip, keys under one hash tag."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from sessions.keys import Keys
from sessions.models import (
    Conversation,
    ConversationEvent,
    ConversationState,
    Customer,
    Direction,
    Message,
    PolicySignals,
    SenderKind,
    StatusUpdate,
)
from sessions.store import ConversationNotFound, ConversationStore, TransitionRefused

TTL = 3600


@pytest.fixture
def store(redis: Redis, namespace: str) -> ConversationStore:
    return ConversationStore(redis, Keys(namespace), TTL)


def customer_says(conversation_id: str, text: str) -> Message:
    return Message(conversation_id=conversation_id, direction=Direction.INBOUND, sender=SenderKind.CUSTOMER,
                   text=text, channel="webchat")


async def test_conversation_keys_share_one_hash_tag_and_expire(store: ConversationStore, redis: Redis) -> None:
    created = await store.create(Customer(id="cu1"), "webchat")
    cid = created.conversation.id
    await store.append(customer_says(cid, "hi"), external_id="ws:1")
    keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{store.keys.namespace}:{{c:{cid}}}*")])
    assert len(keys) == 4  # state, transcript, events, one external-id claim
    assert all(f"{{c:{cid}}}" in k for k in keys)
    for key in keys:
        assert 0 < await redis.ttl(key) <= TTL


async def test_append_is_idempotent_per_external_id(store: ConversationStore) -> None:
    cid = (await store.create(Customer(id="cu1"), "sms")).conversation.id
    first = await store.append(customer_says(cid, "hello"), external_id="SM123")
    again = await store.append(customer_says(cid, "hello"), external_id="SM123")
    other = await store.append(customer_says(cid, "hello"), external_id="SM124")
    assert not first.duplicate and again.duplicate
    assert again.message.id == first.message.id
    assert other.message.id != first.message.id
    assert [m.id for m in await store.transcript(cid)] == [first.message.id, other.message.id]


async def test_append_to_unknown_conversation_raises(store: ConversationStore) -> None:
    with pytest.raises(ConversationNotFound):
        await store.append(customer_says("f" * 32, "hello"))


async def test_append_updates_fields_and_returns_the_snapshot(store: ConversationStore) -> None:
    cid = (await store.create(Customer(id="cu1", tier="gold"), "webchat")).conversation.id
    result = await store.append(customer_says(cid, "x"), updates={"last_intent": "billing", "signals": PolicySignals(failed_turns=2)})
    assert result.conversation.last_intent == "billing"
    assert result.conversation.signals.failed_turns == 2
    assert result.conversation.customer.tier == "gold"


async def test_a_step_that_needs_no_state_back_returns_the_callers_snapshot_with_the_step_applied(
    store: ConversationStore,
) -> None:
    cid = (await store.create(Customer(id="cu1", tier="gold"), "webchat")).conversation.id
    snapshot = (await store.append(customer_says(cid, "x"))).conversation
    reply = Message(conversation_id=cid, direction=Direction.OUTBOUND, sender=SenderKind.BOT, text="y",
                    channel="webchat")
    result = await store.append_and_move(
        reply, ConversationState.BOT, [], updates={"last_intent": "", "signals": PolicySignals(failed_turns=1)},
        allowed_from=[ConversationState.BOT], snapshot=snapshot)
    stored = await store.get(cid)
    assert result.message.id and result.message.id == (await store.transcript(cid))[-1].id
    for field in ("state", "last_intent", "signals", "updated_at", "customer"):
        assert getattr(result.conversation, field) == getattr(stored, field), field


def bot_says(conversation_id: str, text: str) -> Message:
    return Message(conversation_id=conversation_id, direction=Direction.OUTBOUND, sender=SenderKind.BOT,
                   text=text, channel="webchat")


async def bot_turn(store: ConversationStore, snapshot: Conversation, intent: str, confidence: float,
                   signals: PolicySignals) -> Conversation:
    """The pipeline's reply step: the bot's answer, its intent and the policy's memory, from the turn's
    snapshot."""
    result = await store.append_and_move(
        bot_says(snapshot.id, "y"), ConversationState.BOT, [],
        updates={"last_intent": intent, "last_confidence": confidence, "signals": signals},
        allowed_from=[ConversationState.BOT], snapshot=snapshot)
    return result.conversation


async def test_turns_after_this_process_own_step_skip_the_state_and_still_return_the_stored_one(
    store: ConversationStore, redis: Redis,
) -> None:
    cid = (await store.create(Customer(id="cu1", tier="gold"), "webchat")).conversation.id
    script_replies: list[object] = []
    send = store.batcher.script

    def recording(*args: object, **kwargs: object) -> asyncio.Future[object]:
        future = send(*args, **kwargs)  # type: ignore[arg-type]
        future.add_done_callback(lambda f: script_replies.append(f.result()))
        return future

    store.batcher.script = recording  # type: ignore[method-assign]
    for turn in range(4):
        said = customer_says(cid, f"question {turn}")
        accepted = await store.append(said, external_id=f"ws:{turn}", updates={"last_inbound_at": said.ts})
        assert accepted.conversation == await store.get(cid)
        signals = PolicySignals(sentiment=[0.1234, -0.5][: turn % 3], language="en" if turn else None)
        replied = await bot_turn(store, accepted.conversation, "" if turn == 2 else f"i{turn}", 0.1 * turn, signals)
        assert replied == await store.get(cid)
    # The first append had no state of this process's own to start from; every later one did, and the
    # reply steps confirmed theirs.
    appends = script_replies[0::2]
    assert len(appends[0]) == 3 and all(len(reply) == 2 for reply in appends[1:])  # type: ignore[arg-type]
    assert all(reply[3] == 1 for reply in script_replies[1::2])  # type: ignore[index]


async def test_a_change_made_elsewhere_is_read_back_in_full(store: ConversationStore, redis: Redis,
                                                            namespace: str) -> None:
    cid = (await store.create(Customer(id="cu1"), "webchat")).conversation.id
    accepted = await store.append(customer_says(cid, "hi"))
    await bot_turn(store, accepted.conversation, "greeting", 0.9, PolicySignals())
    other = ConversationStore(redis, Keys(namespace), TTL)  # another instance
    event = ConversationEvent(type="conversation.resolved", conversation_id=cid)
    await other.transition(cid, ConversationState.RESOLVED, event, updates={"tags": ["vip"]})
    again = await store.append(customer_says(cid, "back again"))
    assert again.conversation.state is ConversationState.RESOLVED and again.conversation.tags == ["vip"]
    assert again.conversation == await store.get(cid)
    # A reply from a snapshot the store does not know as its own last step is not remembered either.
    stale = accepted.conversation
    moved = await store.append_and_move(bot_says(cid, "z"), ConversationState.BOT, [], updates={"last_intent": "x"},
                                        allowed_from=[ConversationState.RESOLVED], snapshot=stale)
    assert moved.conversation.tags == []  # the caller's snapshot, as documented ...
    after = await store.append(customer_says(cid, "and again"))
    assert after.conversation.tags == ["vip"] and after.conversation == await store.get(cid)  # ... not kept


async def test_a_transcript_entry_is_the_message_as_json_without_its_id(
    store: ConversationStore, redis: Redis
) -> None:
    cid = (await store.create(Customer(id="cu1"), "webchat")).conversation.id
    said = customer_says(cid, 'Grüße "quoted" <b> 😀')
    said.channel_metadata = {"nested": {"n": [1, 2.5, None]}}
    reply = Message(conversation_id=cid, direction=Direction.OUTBOUND, sender=SenderKind.BOT, text="y",
                    channel="webchat")
    await store.append(said)
    await store.append_and_move(reply, ConversationState.BOT, [], allowed_from=[ConversationState.BOT])
    entries = await redis.xrange(store.keys.transcript(cid))
    assert [f[b"m"].decode() for _, f in entries] == [m.model_dump_json(exclude={"id"}) for m in (said, reply)]


async def test_transition_only_from_allowed_states_and_records_event(store: ConversationStore) -> None:
    cid = (await store.create(Customer(id="cu1"), "webchat")).conversation.id
    with pytest.raises(TransitionRefused) as refused:
        await store.transition(cid, ConversationState.ASSIGNED,
                               ConversationEvent(type="agent.assigned", conversation_id=cid))
    assert refused.value.current == "bot"

    await store.transition(cid, ConversationState.ESCALATING,
                           ConversationEvent(type="handoff.started", conversation_id=cid), {"queue": "billing"})
    conversation = await store.get(cid)
    assert conversation.state is ConversationState.ESCALATING and conversation.queue == "billing"
    assert [e.type for e in await store.events(cid)] == ["conversation.created", "handoff.started"]


async def test_resume_needs_the_exact_token(store: ConversationStore) -> None:
    created = await store.create(Customer(id="cu1"), "webchat")
    cid = created.conversation.id
    m1 = await store.append(customer_says(cid, "one"))
    m2 = await store.append(customer_says(cid, "two"))
    conversation, history = await store.resume(created.resume_token, after=m1.message.id)
    assert conversation.id == cid and [m.text for m in history] == ["two"]
    assert history[0].id == m2.message.id
    for bad in (cid + ".wrong", cid, created.resume_token + "x", "nope.nope"):
        with pytest.raises(ConversationNotFound):
            await store.resume(bad)


async def test_recent_lists_newest_first(store: ConversationStore) -> None:
    a = (await store.create(Customer(id="a"), "webchat")).conversation.id
    b = (await store.create(Customer(id="b"), "webchat")).conversation.id
    assert (await store.recent())[:2] == [b, a]


@pytest.mark.parametrize(("raised", "event", "level"), [
    (RedisConnectionError("Connection closed by server."), "status.listener_unavailable", "warning"),
    (ValueError("a bug in a channel"), "status.listener_failed", "error"),
])
async def test_a_channel_failing_to_hear_a_step_never_undoes_it_and_only_a_defect_is_an_error(
    store: ConversationStore, raised: Exception, event: str, level: str
) -> None:
    async def listener(update: StatusUpdate) -> None:
        raise raised

    store.on_status = listener
    cid = (await store.create(Customer(id="cu-l"), "sms")).conversation.id
    with capture_logs() as logged:
        await store.transition(cid, ConversationState.ESCALATING,
                               ConversationEvent(type="handoff.queued", conversation_id=cid))
    assert (await store.get(cid)).state is ConversationState.ESCALATING
    told = [entry for entry in logged if entry["event"].startswith("status.")]
    assert [(entry["event"], entry["log_level"]) for entry in told] == [(event, level)]
    assert told[0]["conversation_id"] == cid and told[0]["kind"] == "queued"
