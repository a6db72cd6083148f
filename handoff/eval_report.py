"""`rules eval`'s report as text for a person, or as JSON for a dashboard or a CI step."""

from __future__ import annotations

import statistics
from typing import Any

from handoff.evaluation import Report, Score
from handoff.labelled import NONE


def render(report: Report, source: str, wrong_limit: int = 200) -> str:
    lines = [f"{source}: {len(report.outcomes)} items, part {report.set_part or '-'}, "
             f"rules {report.rules_version}", ""]
    lines.append(f"{'trigger':<28}{'expected':>9}{'decided':>9}{'precision':>11}{'recall':>8}{'F1':>7}")
    rows = [report.score(label) for label in report.labels]
    risk = report.high_risk()
    for score in rows:
        lines.append(_row(score.label, score))
        if score.label.startswith("high_risk.") and not any(
            r.label.startswith("high_risk.") and r.label > score.label for r in rows
        ):
            lines.append(_row("high_risk (all rules)", risk))

    lines += ["", f"{'locale':<8}{'items':>6}{'right':>8}{'explicit R':>12}{'high-risk R':>13}"
                  f"{'none P':>8}{'none R':>8}"]
    for locale, outcomes in report.by_locale().items():
        explicit = report.score("explicit_request", outcomes)
        stay = report.score(NONE, outcomes)
        lines.append(f"{locale:<8}{len(outcomes):>6}{report.accuracy(outcomes):>8.3f}"
                     f"{_ratio(explicit.recall, explicit.support):>12}"
                     f"{_ratio(report.high_risk(outcomes).recall, report.high_risk(outcomes).support):>13}"
                     f"{stay.precision:>8.3f}{_ratio(stay.recall, stay.support):>8}")

    locales = report.by_locale()
    lines += ["", "per locale: precision / recall / F1"]
    lines.append(f"{'trigger':<28}" + "".join(f"{locale:>20}" for locale in locales))
    for label in report.labels:
        cells = []
        for outcomes in locales.values():
            score = report.score(label, outcomes)
            recall = f"{score.recall:.2f}" if score.support else "-"
            seen = score.support or score.decided
            cells.append(f"{score.precision:.2f} / {recall} / {score.f1:.2f}" if seen else "-")
        lines.append(f"{label:<28}" + "".join(f"{cell:>20}" for cell in cells))

    labels = report.labels
    confusion = report.confusion()
    lines += ["", "confusion: rows expected, columns decided"]
    lines.append(" " * 28 + "".join(f"{n:>5}" for n in range(1, len(labels) + 1)))
    for number, expected in enumerate(labels, start=1):
        row = "".join(f"{confusion.get((expected, decided), 0) or '.':>5}" for decided in labels)
        lines.append(f"{number:>2} {expected:<25}{row}")

    wrong = [o for o in report.outcomes if not o.right]
    lines += ["", f"wrong decisions: {len(wrong)}"]
    for outcome in wrong[:wrong_limit]:
        item = outcome.item
        said = item.messages[outcome.turn - 1]
        lines.append(f"  {item.id} ({item.locale}, {item.channel}) expected {item.expect}, decided "
                     f"{outcome.decided} at turn {outcome.turn}/{len(item.messages)}: {said!r}")
        lines.append(f"      {outcome.explanation}")
    if len(wrong) > wrong_limit:
        lines.append(f"  ... and {len(wrong) - wrong_limit} more (--json lists every one)")

    costs = report.decision_microseconds
    if costs:
        lines += ["", f"decision cost: {len(costs)} decisions, mean {statistics.fmean(costs):.1f} µs, "
                      f"p50 {_quantile(costs, 0.5):.1f} µs, p99 {_quantile(costs, 0.99):.1f} µs "
                      f"(the policy alone; the bot's turn and sentiment/language reading are not counted)"]
    missed = report.failures()
    lines.append("")
    lines.append("thresholds: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return "\n".join(lines)


def as_json(report: Report, source: str) -> dict[str, Any]:
    costs = report.decision_microseconds
    return {
        "set": source,
        "part": report.set_part,
        "rules_version": report.rules_version,
        "items": len(report.outcomes),
        "triggers": {s.label: _score_json(s) for s in (report.score(label) for label in report.labels)},
        "high_risk": _score_json(report.high_risk()),
        "locales": {locale: {"items": len(o), "accuracy": round(report.accuracy(o), 4),
                             "explicit_request": _score_json(report.score("explicit_request", o)),
                             "high_risk": _score_json(report.high_risk(o)),
                             NONE: _score_json(report.score(NONE, o)),
                             "triggers": {label: _score_json(report.score(label, o))
                                          for label in report.labels}}
                    for locale, o in report.by_locale().items()},
        "confusion": [{"expected": e, "decided": d, "count": n}
                      for (e, d), n in sorted(report.confusion().items())],
        "wrong": [{"id": o.item.id, "locale": o.item.locale, "channel": o.item.channel,
                   "expected": o.item.expect, "decided": o.decided, "turn": o.turn,
                   "explanation": o.explanation}
                  for o in report.outcomes if not o.right],
        "decision_microseconds": {
            "mean": round(statistics.fmean(costs), 2) if costs else None,
            "p50": round(_quantile(costs, 0.5), 2) if costs else None,
            "p99": round(_quantile(costs, 0.99), 2) if costs else None,
        },
        "thresholds": report.thresholds.model_dump(),
        "missed": report.failures(),
    }


def _row(label: str, score: Score) -> str:
    return (f"{label:<28}{score.support:>9}{score.decided:>9}{score.precision:>11.3f}"
            f"{_ratio(score.recall, score.support):>8}{score.f1:>7.3f}")


def _ratio(value: float, support: int) -> str:
    return f"{value:.3f}" if support else "-"


def _score_json(score: Score) -> dict[str, Any]:
    return {"expected": score.support, "decided": score.decided, "right": score.hits,
            "precision": round(score.precision, 4), "recall": round(score.recall, 4),
            "f1": round(score.f1, 4)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
