"""Review metrics: outcome records as conversations hand off and end, day counters, and `handoff-gateway review`.

Real conversations run through the real gateway and desk where one is enough; a history of many days is written
through the recorder's own public API (``ReviewRecorder.write``) with explicit days, and every figure of the
review is checked against what that history was built to give.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.review_cli import SinceError, parse_since
from gateway.settings import DEMO_RULES, ConfigError, load_settings
from handoff.loader import load_rules
from handoff.review.buckets import Totals, increments
from handoff.review.record import Outcome, OutcomeRecord, RecordKind, Transfer, build
from handoff.review.recorder import ReviewRecorder, days_back, team_zone
from handoff.review.report import review
from sessions.keys import Keys
from sessions.models import (
    Conversation,
    Customer,
    Direction,
    Message,
    SenderKind,
    StatusKind,
    StatusUpdate,
    TurnMeta,
)
from sessions.store import ConversationStore, fan_out
from tests.chat import connect
from tests.test_desk import AgentClient, add_agent

NEW_YORK = ZoneInfo("America/New_York")
FRIDAY_MORNING = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
VERSION = "2026-11-30.1+test"


def recorder_for(redis: Redis, namespace: str, idle_seconds: float = 60) -> ReviewRecorder:
    return ReviewRecorder(redis, Keys(namespace), lambda: (NEW_YORK, VERSION), retention_days=400,
                          idle_seconds=idle_seconds)


def today() -> date:
    return datetime.now(UTC).astimezone(NEW_YORK).date()


def rec(days_ago: int, kind: RecordKind, outcome: Outcome, **fields: Any) -> OutcomeRecord:
    """A record of ``days_ago`` team-local days before today, with what the figures need."""
    day = today() - timedelta(days=days_ago)
    at = datetime(day.year, day.month, day.day, 12, tzinfo=NEW_YORK)
    values: dict[str, Any] = {
        "conversation_id": f"c{days_ago}-{fields.pop('n', 0)}", "customer_id": "cu", "kind": kind,
        "outcome": outcome, "at": at, "started_at": at, "day": day.isoformat(), "hour": 12,
        "weekday": day.weekday(), "channel": "webchat", "intent": "orders", "rules_version": VERSION,
        **fields,
    }
    return OutcomeRecord.model_validate(values)


def escalated(days_ago: int, n: int, queue: str, trigger: str, **fields: Any) -> OutcomeRecord:
    fields.setdefault("mode", "live")
    return rec(days_ago, RecordKind.HANDOFF, Outcome.ESCALATED, n=n, first_queue=queue, final_queue=queue,
               trigger=trigger, trigger_rule=f"{trigger}.rule", bot_turns=2, **fields)


def ended(days_ago: int, n: int, queue: str, trigger: str, outcome: Outcome = Outcome.RESOLVED,
          **fields: Any) -> OutcomeRecord:
    fields.setdefault("first_queue", queue)
    fields.setdefault("handle", 300.0 if outcome is Outcome.RESOLVED else None)
    return rec(days_ago, RecordKind.END, outcome, n=n, final_queue=queue, trigger=trigger,
               trigger_rule=f"{trigger}.rule", mode="live", abandoned_waiting=outcome is Outcome.ABANDONED,
               **fields)


def bot_only(days_ago: int, n: int, outcome: Outcome = Outcome.CONTAINED) -> OutcomeRecord:
    return rec(days_ago, RecordKind.END, outcome, n=100 + n, bot_turns=3,
               failed_bot_answers=2 if outcome is Outcome.LEFT_AFTER_FAILURE else 0)


def history() -> list[OutcomeRecord]:
    """Last week (10 days ago): 20 "orders" conversations, 2 escalated (10%), both resolved with "not enough
    context", one transferred general -> billing. This week (2 days ago): 20 "orders" conversations, 6 escalated
    to general (30%), and 4 "refund" ones escalated to billing; 10 contained and 4 left after failed answers."""
    repeat = {"previous_outcome": Outcome.CONTAINED, "repeat_of": "earlier"}
    records = [
        escalated(10, 0, "general", "explicit_request"), escalated(10, 1, "general", "explicit_request"),
        ended(10, 0, "general", "explicit_request", to_agent=40.0, context_sufficient=False),
        ended(10, 1, "billing", "explicit_request", to_agent=40.0, context_sufficient=False, first_queue="general",
              transfers=[Transfer(from_queue="general", to_queue="billing")]),
        *(bot_only(10, n) for n in range(18)),
        *(escalated(2, n, "general", "explicit_request", overflow_from="billing" if n == 0 else None)
          for n in range(6)),
        *(escalated(2, 10 + n, "billing", "high_risk_intent", intent="refund",
                    mode="async" if n == 0 else "live") for n in range(4)),
        *(ended(2, n, "general", "explicit_request", to_agent=wait, context_sufficient=n != 0, reopened=n == 1,
                told_wait=60.0 if n == 2 else None, real_wait=50.0 if n == 2 else None)
          for n, wait in enumerate([25.0, 25.0, 50.0, 100.0, 500.0])),
        ended(2, 5, "general", "explicit_request", Outcome.ABANDONED, told_wait=120.0, real_wait=700.0,
              failed_bot_answers=2, **repeat),
        *(ended(2, 10 + n, "billing", "high_risk_intent", to_agent=wait, intent="refund",
                context_sufficient=n == 0, **(repeat if n < 2 else {}))
          for n, wait in enumerate([15.0, 15.0, 15.0, 2000.0])),
        *(bot_only(2, n) for n in range(10)),
        *(bot_only(2, 10 + n, Outcome.LEFT_AFTER_FAILURE) for n in range(4)),
    ]
    return records


async def review_cli(redis_url: str, namespace: str, *args: str) -> tuple[int, str, str]:
    """The real command in a subprocess, as an operator runs it: (exit code, stdout, stderr)."""
    environment = {k: v for k, v in os.environ.items() if k not in {"RULES_DIR"}}
    environment.update(LOG_FORMAT="json", REDIS_URL=redis_url, REDIS_NAMESPACE=namespace)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "review", *args, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def write_all(recorder: ReviewRecorder, records: list[OutcomeRecord]) -> None:
    await asyncio.gather(*(recorder.write(r) for r in records))


async def figures(recorder: ReviewRecorder, days: int = 30, **kwargs: Any) -> dict[str, Any]:
    counters = await recorder.day_counters(days_back(today(), max(days, 14)))
    return review(Totals(counters[-days:]), Totals(counters[-7:]), Totals(counters[-14:-7]), **kwargs)


async def test_every_figure_against_a_hand_built_history(redis: Redis, namespace: str) -> None:
    recorder = recorder_for(redis, namespace)
    await write_all(recorder, history())
    got = await figures(recorder)

    esc = got["escalation"]
    assert (esc["conversations"], esc["escalations"], esc["rate"]) == (44, 12, round(12 / 44, 4))
    intents = {r["intent"]: r for r in esc["by"]["intent"]}
    assert (intents["orders"]["conversations"], intents["orders"]["escalations"]) == (40, 8)
    assert (intents["refund"]["conversations"], intents["refund"]["rate"]) == (4, 1.0)
    assert {r["queue"]: r["escalations"] for r in esc["by"]["queue"]} == {"general": 8, "billing": 4}
    assert {r["trigger"]: r["escalations"] for r in esc["by_trigger"]} == \
        {"explicit_request": 8, "high_risk_intent": 4}

    con = got["containment"]
    assert (con["bot_only"], con["contained"], con["left_after_failed_answers"]) == (32, 28, 4)
    assert con["left_share"] == 0.125
    assert con["repeat_after_bot_only"] == 3 and con["repeat_after_bot_only_share"] == round(3 / 32, 4)

    ctx = got["context"]
    assert ctx["rated"] == 11 and ctx["yes_share"] == round(5 / 11, 4)
    assert {r["trigger"]: (r["rated"], r["yes_share"]) for r in ctx["by_trigger"]} == \
        {"explicit_request": (7, round(4 / 7, 4)), "high_risk_intent": (4, 0.25)}
    assert ctx["lacking_by_intent"] == [{"intent": "refund", "not_enough": 3}, {"intent": "orders", "not_enough": 3}] \
        or ctx["lacking_by_intent"] == [{"intent": "orders", "not_enough": 3}, {"intent": "refund", "not_enough": 3}]

    rte = got["routing"]
    assert rte["transfers"] == [{"from": "general", "to": "billing", "count": 1}]
    assert rte["overflow"] == {"billing": 1} and rte["after_hours"] == {"billing": 1}

    tta = got["sla"]["time_to_agent"]
    assert tta["all"] == {"p50": 45.0, "p90": 600.0, "n": 11}
    assert tta["queue"]["general"] == {"p50": 45.0, "p90": 600.0, "n": 6}
    assert tta["queue"]["billing"] == {"p50": 20.0, "p90": 3600.0, "n": 5}
    assert got["sla"]["promise"] == {"general": {"told": 2, "mean_error_seconds": 295.0,
                                                 "longer_than_told_share": 0.5}}
    ab = got["sla"]["abandoned_waiting"]
    assert (ab["total"], ab["rate"], ab["failed_bot_answers_mean"]) == (1, round(1 / 12, 4), 2.0)
    assert ab["by_queue"] == {"general": {"abandoned": 1, "rate": 0.125}}

    out = got["outcomes"]
    assert out["ended"] == {"contained": 28, "resolved": 11, "left_after_failure": 4, "abandoned": 1}
    assert out["resolved_by_agent"] == 11 and out["reopened"] == 1
    assert got["cost"] == {"bot_turns_per_conversation": round(120 / 44, 2), "agent_handle_seconds_mean": 300.0,
                           "handled": 11}

    signals = {(s["signal"], s["subject"]): s["figure"] for s in got["signals"]}
    assert signals == {
        ("escalation_rate_up", "orders"): "10.0% -> 30.0% week over week",
        ("queue_overloaded", "billing"): "p90 time to agent <= 3600 s",
        ("abandonment_rising", "all"): "0.0% -> 10.0% of handoffs abandoned while waiting",
        ("misroutes", "general"): "12.5% of its handoffs transferred on (1)",
        ("repeat_contact_rising", "all"): "0.0% -> 12.5% of endings were a repeat within 7 days",
        ("not_enough_context", "all"): "54.5% of 11 rated handoffs",
    }


async def test_a_shorter_window_and_one_breakdown(redis: Redis, namespace: str) -> None:
    recorder = recorder_for(redis, namespace)
    await write_all(recorder, history())
    got = await figures(recorder, days=7, breakdowns=["channel"])
    assert got["escalation"]["conversations"] == 24 and got["escalation"]["escalations"] == 10
    assert list(got["escalation"]["by"]) == ["channel"]
    assert got["routing"]["transfers"] == []  # the transfer was 10 days ago


async def test_routing_gaps_come_from_the_rules_and_the_agents(redis: Redis, namespace: str) -> None:
    recorder = recorder_for(redis, namespace)
    await write_all(recorder, history())
    rules = load_rules(DEMO_RULES)
    queues = set(rules.queues.queues)
    serves = {q: q == "general" for q in queues}
    rte = (await figures(recorder, rules=rules, serves=serves))["routing"]
    assert "general" not in rte["unserved_queues"] and "billing" in rte["unserved_queues"]
    assert all(q in queues for q in rte["unreached_queues"])


def _conversation(channel: str, customer: Customer, created: datetime) -> Conversation:
    return Conversation(id=f"{channel}{created.timestamp():.0f}", channel=channel, customer=customer,
                        created_at=created, updated_at=created)


def test_team_local_day_and_hour_around_midnight_and_across_a_dst_change() -> None:
    customer = Customer(id="cu1")
    conversation = _conversation("webchat", customer, datetime(2026, 10, 31, tzinfo=UTC))
    cases = [
        # 23:59 and 00:00 in New York on either side of midnight (UTC-4 before 1 Nov 2026, UTC-5 after).
        (datetime(2026, 10, 31, 3, 59, tzinfo=UTC), "2026-10-30", 23),
        (datetime(2026, 10, 31, 4, 0, tzinfo=UTC), "2026-10-31", 0),
        # The clocks go back at 06:00Z on 1 Nov: 05:30Z is 01:30 EDT, 06:30Z is 01:30 EST, the same day.
        (datetime(2026, 11, 1, 5, 30, tzinfo=UTC), "2026-11-01", 1),
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), "2026-11-01", 1),
        # After the change, midnight in New York is 05:00Z.
        (datetime(2026, 11, 2, 4, 59, tzinfo=UTC), "2026-11-01", 23),
        (datetime(2026, 11, 2, 5, 0, tzinfo=UTC), "2026-11-02", 0),
        # Spring forward (8 Mar 2026): 07:30Z is 03:30 EDT; 06:30Z was 01:30 EST.
        (datetime(2026, 3, 8, 6, 30, tzinfo=UTC), "2026-03-08", 1),
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), "2026-03-08", 3),
    ]
    for at, day, hour in cases:
        record = build(conversation, [], [], kind=RecordKind.END, outcome=Outcome.CONTAINED, at=at, zone=NEW_YORK)
        assert (record.day, record.hour) == (day, hour), at
    assert build(conversation, [], [], kind=RecordKind.END, outcome=Outcome.CONTAINED,
                 at=datetime(2026, 11, 2, 5, 0, tzinfo=UTC), zone=NEW_YORK).weekday == 0  # a Monday


async def test_records_land_in_their_team_local_day_and_expire_after_retention(
    redis: Redis, namespace: str
) -> None:
    recorder = recorder_for(redis, namespace)
    late, early = rec(3, RecordKind.END, Outcome.CONTAINED), rec(2, RecordKind.END, Outcome.CONTAINED, n=1)
    await write_all(recorder, [late, early])
    day3, day2 = (today() - timedelta(days=d) for d in (3, 2))
    counters = await recorder.day_counters([day3, day2])
    assert [c["contained|all|"] for c in counters] == [1.0, 1.0]
    keys = Keys(namespace)
    ttl = await redis.ttl(keys.review_buckets(day2.isoformat()))
    left = (datetime.combine(day2, datetime.min.time(), UTC) + timedelta(days=402) - datetime.now(UTC))
    assert abs(ttl - left.total_seconds()) < 5
    assert await redis.ttl(keys.review_records(day2.isoformat())) == pytest.approx(ttl, abs=2)
    # A day and its counters share one hash tag (one Cluster slot); days spread over slots.
    assert keys.review_records("2026-11-30").split("}")[0] == keys.review_buckets("2026-11-30").split("}")[0]


async def arm(recorder: ReviewRecorder, redis: Redis, conversation: Conversation) -> None:
    """Arm the quiet check as a bot turn does (fire and forget), and wait until it is stored."""
    recorder.arm(conversation)
    recorder.arm(conversation)  # a second turn soon after adds nothing
    async with asyncio.timeout(2):
        while await redis.zscore(recorder.keys.review_idle(), conversation.id) is None:
            await asyncio.sleep(0.01)


def _bot_message(conversation: Conversation, fallback: bool, at: datetime) -> Message:
    return Message(conversation_id=conversation.id, direction=Direction.OUTBOUND, sender=SenderKind.BOT,
                   text="(bot)", channel=conversation.channel, ts=at,
                   turn=TurnMeta(intent=None if fallback else "orders", fallback=fallback))


async def test_repeat_contact_across_sms_and_web_chat_for_one_linked_customer(
    redis: Redis, namespace: str
) -> None:
    """The same customer, linked across channels, leaves the bot on web chat after failed answers and texts
    two days later: the SMS conversation is a repeat contact after a bot-only one, whatever its channel."""
    store = ConversationStore(redis, Keys(namespace), 3600)
    recorder = recorder_for(redis, namespace, idle_seconds=60)
    customer = Customer(id="linked", identities=[])
    web = (await store.create(customer, "webchat")).conversation
    for fallback in (False, True, True):
        await store.append(_bot_message(web, fallback, datetime.now(UTC)))
    await arm(recorder, redis, await store.get(web.id))
    assert await recorder.sweep_idle(datetime.now(UTC) + timedelta(seconds=30)) == 0  # not quiet yet
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert await recorder.sweep_idle(later) == 1
    first = [r async for r in recorder.records([today(), today() + timedelta(days=1)])]
    assert [(r["channel"], r["outcome"], r["trailing_failures"], r["previous_outcome"]) for r in first] == \
        [("webchat", "left_after_failure", 2, None)]

    sms = (await store.create(customer, "sms")).conversation
    await store.append(_bot_message(sms, False, datetime.now(UTC)))
    await arm(recorder, redis, await store.get(sms.id))
    assert await recorder.sweep_idle(datetime.now(UTC) + timedelta(seconds=61)) == 1
    records = [r async for r in recorder.records([today(), today() + timedelta(days=1)])]
    assert [(r["channel"], r["outcome"], r["repeat_of"], r["previous_outcome"]) for r in records][-1] == \
        ("sms", "contained", web.id, "left_after_failure")
    assert await redis.zcard(Keys(namespace).review_idle()) == 0  # both recorded, neither re-armed

    # An earlier conversation more than 7 days before is not a repeat.
    old = OutcomeRecord.model_validate({**records[-1], "conversation_id": "old"})
    assert old.repeat_of == web.id
    stale = build(_conversation("sms", customer, datetime.now(UTC) + timedelta(days=8)), [], [],
                  kind=RecordKind.END, outcome=Outcome.CONTAINED, at=datetime.now(UTC) + timedelta(days=8),
                  zone=NEW_YORK, previous=None)
    assert stale.previous_outcome is None


async def test_a_web_chat_handoff_to_an_agent_is_recorded_from_the_real_pipeline_and_desk(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str, redis_url: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    await chat.say("where is my order #123456")
    # The bot's reply armed the quiet check (dropped by the sweeper once it sees the handoff).
    due = await redis.zscore(Keys(namespace).review_idle(), chat.conversation_id)
    assert due is not None and due / 1000 > datetime.now(UTC).timestamp() + 29 * 60
    await chat.say_until_handoff("I want to dispute a charge on my card")
    agent = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    await agent.online()
    await chat.recv_until(lambda f: f.get("type") == "handoff" and f.get("status") == "offered")
    status, _ = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/claim")
    assert status == 200
    status, _ = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/messages", {"text": "Hi"})
    assert status == 201
    status, _ = await agent.call("POST", f"/api/conversations/{chat.conversation_id}/resolve",
                                 {"outcome": "refund issued", "context_sufficient": False})
    assert status == 200

    records = await wait_for_records(recorder_for(redis, namespace), 2)
    assert [(r["kind"], r["outcome"]) for r in records] == [("handoff", "escalated"), ("end", "resolved")]
    handoff, end = records
    assert handoff["channel"] == "webchat" and handoff["trigger"] == "high_risk_intent"
    assert handoff["first_queue"] == "billing" and handoff["bot_turns"] == 1 and handoff["intents"][0] == "order_status"
    assert handoff["rules_version"].startswith("2026-11-30.1+") and handoff["to_agent"] is None
    assert end["final_queue"] == "billing" and end["context_sufficient"] is False
    for figure in ("to_queued", "to_offered", "to_agent", "to_first_reply", "handle"):
        assert end[figure] is not None and end[figure] >= 0, figure
    assert end["to_queued"] <= end["to_offered"] <= end["to_agent"] <= end["to_first_reply"]

    code, out, _ = await review_cli(redis_url, namespace, "--json", "--by", "queue")
    assert code == 0
    got = json.loads(out)
    assert got["escalation"]["escalations"] == 1 and got["escalation"]["by"]["queue"][0]["queue"] == "billing"
    assert got["context"]["by_trigger"] == [{"trigger": "high_risk_intent", "rated": 1, "yes_share": 0.0}]
    assert "billing" not in got["routing"]["unserved_queues"]  # Alex serves it
    code, text, _ = await review_cli(redis_url, namespace)
    assert code == 0
    assert "NEEDS REVIEW NOW" in text and "ESCALATION  1 of 1 conversations (100.0%)" in text


async def test_review_on_an_empty_history_says_no_data(redis: Redis, namespace: str, redis_url: str) -> None:
    code, out, err = await review_cli(redis_url, namespace)
    assert code == 0 and out.startswith("no data for the last 30 days (") and not err
    code, out, _ = await review_cli(redis_url, namespace, "--since", "4w", "--json")
    assert code == 0 and json.loads(out)["no_data"] is True and json.loads(out)["since_days"] == 28
    assert await review_cli(redis_url, namespace, "export") == (0, "", "")
    code, out, err = await review_cli(redis_url, namespace, "--since", "thirty")
    assert code == 2 and "--since: expected days or weeks such as 30d or 4w, got 'thirty'" in err


async def test_export_writes_the_raw_records_as_jsonl(redis: Redis, namespace: str, redis_url: str) -> None:
    recorder = recorder_for(redis, namespace)
    records = history()
    for record in records:  # in order, so the export's order is known
        await recorder.write(record)
    code, out, _ = await review_cli(redis_url, namespace, "export", "--since", "30d")
    assert code == 0
    assert [OutcomeRecord.model_validate_json(line) for line in out.splitlines()] == records
    code, out, _ = await review_cli(redis_url, namespace, "export", "--since", "7d")
    assert len(out.splitlines()) == sum(r.day >= str(today() - timedelta(days=6)) for r in records)


def test_since_and_retention_settings_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_since("30d", 400) == 30 and parse_since("2w", 400) == 14
    for bad in ("30", "0d", "401d", "-1d", "3m"):
        with pytest.raises(SinceError):
            parse_since(bad, 400)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REVIEW_RETENTION_DAYS", "0")
    with pytest.raises(ConfigError, match="REVIEW_RETENTION_DAYS"):
        load_settings()


def test_counters_of_one_record_are_per_breakdown() -> None:
    record = ended(0, 0, "general", "explicit_request", to_agent=25.0, context_sufficient=True)
    added = increments(record)
    assert added["tta@30|queue|general"] == 1 and added["context_yes|trigger|explicit_request"] == 1
    assert added["handle_seconds|all|"] == 300.0 and "conversations|all|" not in added
    assert team_zone(load_rules(DEMO_RULES)) == NEW_YORK


async def wait_for_records(recorder: ReviewRecorder, count: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    async with asyncio.timeout(5):  # written in the background, after the step
        while len(records) < count:
            await asyncio.sleep(0.05)
            records = [r async for r in recorder.records(days_back(today() + timedelta(days=1), 3))]
    return records


async def test_a_transfer_and_a_hand_back_through_the_real_desk(
    start_gateway: Any, http: aiohttp.ClientSession, redis: Redis, namespace: str
) -> None:
    base = await start_gateway(clock=lambda: FRIDAY_MORNING)
    chat = await connect(http, base)
    await chat.say_until_handoff("I want to dispute a charge on my card")
    billing = AgentClient(http, base, await add_agent(redis, namespace, "Alex", ["billing"]))
    accounts = AgentClient(http, base, await add_agent(redis, namespace, "Robin", ["accounts"]))
    await billing.online()
    cid = chat.conversation_id
    await chat.recv_until(lambda f: f.get("type") == "handoff" and f.get("status") == "offered")
    assert (await billing.call("POST", f"/api/conversations/{cid}/claim"))[0] == 200
    status, _ = await billing.call("POST", f"/api/conversations/{cid}/transfer", {"queue": "accounts", "note": "x"})
    assert status == 200
    await accounts.online()
    await chat.recv_until(lambda f: f.get("type") == "handoff" and f.get("status") == "offered")
    assert (await accounts.call("POST", f"/api/conversations/{cid}/claim"))[0] == 200
    status, _ = await accounts.call("POST", f"/api/conversations/{cid}/resolve", {"back_to_bot": True})
    assert status == 200

    handoff, end = await wait_for_records(recorder_for(redis, namespace), 2)
    assert handoff["kind"] == "handoff" and handoff["bot_turns"] == 0 and handoff["first_queue"] == "billing"
    assert (end["outcome"], end["first_queue"], end["final_queue"]) == ("back_to_bot", "billing", "accounts")
    assert end["transfers"] == [{"from_queue": "billing", "to_queue": "accounts"}]
    assert end["context_sufficient"] is None and end["handle"] is not None
    counters = (await recorder_for(redis, namespace).day_counters([today()]))[0]
    assert counters["transfers|route|billing>accounts"] == 1 and counters["ended|outcome|back_to_bot"] == 1


async def test_the_listener_records_a_cancelled_callback_and_ignores_other_steps(
    redis: Redis, namespace: str
) -> None:
    store = ConversationStore(redis, Keys(namespace), 3600)
    recorder = recorder_for(redis, namespace)
    conversation = (await store.create(Customer(id="cu2"), "sms")).conversation
    steps = [
        StatusUpdate(kind=StatusKind.WAIT_UPDATE, conversation_id=conversation.id, channel="sms"),
        StatusUpdate(kind=StatusKind.QUEUED, conversation_id=conversation.id, channel="sms"),  # not a handoff
        StatusUpdate(kind=StatusKind.CALLBACK, conversation_id=conversation.id, channel="sms",
                     status={"callback": "scheduled"}),
        StatusUpdate(kind=StatusKind.CALLBACK, conversation_id=conversation.id, channel="sms",
                     status={"callback": "cancelled"}),
    ]
    for step in steps:
        await recorder.on_status(step)
    await recorder.drain()
    records = [r async for r in recorder.records([today()])]
    assert [(r["kind"], r["outcome"], r["channel"]) for r in records] == [("end", "callback_cancelled", "sms")]


async def test_one_listener_failing_does_not_stop_the_others() -> None:
    told: list[str] = []

    async def broken(update: StatusUpdate) -> None:
        raise RuntimeError("boom")

    async def channel(update: StatusUpdate) -> None:
        told.append(update.conversation_id)

    update = StatusUpdate(kind=StatusKind.RESOLVED, conversation_id="c1", channel="webchat")
    await fan_out(broken, channel)(update)
    assert told == ["c1"]


async def test_a_conversation_still_talking_is_checked_again_later(redis: Redis, namespace: str) -> None:
    store = ConversationStore(redis, Keys(namespace), 3600)
    recorder = recorder_for(redis, namespace, idle_seconds=60)
    conversation = (await store.create(Customer(id="cu3"), "webchat")).conversation
    await store.append(_bot_message(conversation, False, datetime.now(UTC)))
    stored = await store.get(conversation.id)
    # Armed from an earlier turn: due now, but the conversation was active less than a minute ago.
    await redis.zadd(Keys(namespace).review_idle(), {conversation.id: 0})
    assert await recorder.sweep_idle(datetime.now(UTC)) == 0
    due = await redis.zscore(Keys(namespace).review_idle(), conversation.id)
    assert due == pytest.approx((stored.updated_at.timestamp() + 60) * 1000, abs=1)
    assert await recorder.sweep_idle(datetime.now(UTC) + timedelta(seconds=61)) == 1
    assert [r["outcome"] async for r in recorder.records([today()])] == ["contained"]
