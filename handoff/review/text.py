"""The review as plain-text tables, for a terminal: signals first, then the checklist in the issue's order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handoff.review.report import Section, bucket


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == float("inf"):
            return "inf"
        return f"{value:g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns as wide as their widest cell; "(none)" for no rows."""
    if not rows:
        return ["  (none)"]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    return [line.rstrip(), *("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                             for r in cells)]


def _seconds(value: float | None) -> str:
    return "-" if value is None else bucket(value)


def render(review: Section, title: str) -> str:
    parts = (_escalation(review), _containment(review), _routing(review), _sla(review), _after(review))
    return "\n".join([title, "", *(line for part in parts for line in part)])


def _escalation(review: Section) -> list[str]:
    out = ["NEEDS REVIEW NOW"]
    out += table(["signal", "subject", "figure", "threshold"],
                 [(s["signal"], s["subject"], s["figure"], s["threshold"]) for s in review["signals"]])
    esc = review["escalation"]
    out += ["", f"ESCALATION  {esc['escalations']} of {esc['conversations']} conversations "
                f"({_pct(esc['rate'])})"]
    for dimension, rows in esc["by"].items():
        out.append(f" by {dimension}")
        out += table([dimension, "conversations", "escalations", "rate"],
                     [(r[dimension], r["conversations"], r["escalations"], _pct(r["rate"])) for r in rows])
    out.append(" by trigger")
    out += table(["trigger", "escalations", "share"],
                 [(r["trigger"], r["escalations"], _pct(r["share"])) for r in esc["by_trigger"]])
    return out


def _containment(review: Section) -> list[str]:
    con = review["containment"]
    out = ["", "CONTAINMENT"]
    out += table(["figure", "value"], [
        ("bot-only conversations", con["bot_only"]),
        ("contained", con["contained"]),
        ("left after failed bot answers", f"{con['left_after_failed_answers']} ({_pct(con['left_share'])})"),
        ("came back within 7 days after the bot alone",
         f"{con['repeat_after_bot_only']} ({_pct(con['repeat_after_bot_only_share'])})"),
    ])
    ctx = review["context"]
    out += ["", f"CONTEXT QUALITY  {_pct(ctx['yes_share'])} 'enough context' of {ctx['rated']} rated"]
    for dimension in ("trigger", "intent"):
        out.append(f" by {dimension}")
        out += table([dimension, "rated", "yes"],
                     [(r[dimension], r["rated"], _pct(r["yes_share"])) for r in ctx[f"by_{dimension}"]])
    out.append(" intents whose handoffs most often lacked context")
    out += table(["intent", "not enough"], [(r["intent"], r["not_enough"]) for r in ctx["lacking_by_intent"]])
    return out


def _routing(review: Section) -> list[str]:
    rte = review["routing"]
    out = ["", "ROUTING", " transfers after assignment"]
    out += table(["from", "to", "count"], [(r["from"], r["to"], r["count"]) for r in rte["transfers"]])
    if "unserved_queues" in rte:
        unserved = ", ".join(rte["unserved_queues"]) or "(none)"
        out.append(f" queues a rule routes to that nobody serves: {unserved}")
    if "unreached_queues" in rte:
        out.append(f" queues no rule reaches: {', '.join(rte['unreached_queues']) or '(none)'}")
    out.append(" overflow and after-hours handoffs")
    queues = sorted({*rte["overflow"], *rte["after_hours"]})
    out += table(["queue", "overflowed from", "after hours"],
                 [(q, rte["overflow"].get(q, 0), rte["after_hours"].get(q, 0)) for q in queues])
    return out


def _sla(review: Section) -> list[str]:
    s = review["sla"]
    out = ["", "SLA", " time to agent"]
    tta = s["time_to_agent"]
    rows = [("all", "", tta["all"]["n"], _seconds(tta["all"]["p50"]), _seconds(tta["all"]["p90"]))]
    for dimension in ("queue", "channel"):
        rows += [(dimension, v, r["n"], _seconds(r["p50"]), _seconds(r["p90"]))
                 for v, r in tta[dimension].items()]
    out += table(["by", "value", "n", "p50", "p90"], rows)
    out.append(" promise accuracy (wait told against real wait)")
    out += table(["queue", "told", "mean error", "waited longer than told"],
                 [(q, r["told"], f"{r['mean_error_seconds']:g} s", _pct(r["longer_than_told_share"]))
                  for q, r in s["promise"].items()])
    ab = s["abandoned_waiting"]
    out.append(f" abandoned while waiting: {ab['total']} ({_pct(ab['rate'])} of handoffs); failed bot "
               f"answers before, on average: {_cell(ab['failed_bot_answers_mean'])}")
    out += table(["queue", "abandoned", "rate"],
                 [(q, r["abandoned"], _pct(r["rate"])) for q, r in ab["by_queue"].items()])
    return out


def _after(review: Section) -> list[str]:
    oc = review["outcomes"]
    out = ["", "OUTCOMES (after the transfer, and the bot's own endings)"]
    out += table(["outcome", "count"], list(oc["ended"].items()))
    reopened = f"{oc['reopened']} ({_pct(oc['reopened_share'])} of resolved)"
    out.append(f" reopened within the return window: {reopened}")
    if oc["callbacks"]:
        out.append(" callbacks: " + ", ".join(f"{k} {v}" for k, v in oc["callbacks"].items()))
    if oc["delivery_failures"]:
        out.append(" delivery failures: " + ", ".join(f"{k} {v}" for k, v in oc["delivery_failures"].items()))
    c = review["cost"]
    out += ["", "COST"]
    out += table(["figure", "value"], [
        ("bot turns per conversation", c["bot_turns_per_conversation"]),
        ("agent handle time, mean", None if c["agent_handle_seconds_mean"] is None
         else f"{c['agent_handle_seconds_mean']:g} s over {c['handled']}"),
    ])
    return out
