"""`rules check` warnings about trigger phrases: what matching by meaning cannot see for itself.

A phrase can be right in the rule writer's head and wrong in customers' mouths: a word with another common
sense ("my shipping agent"), one everyday word alone, or a language's inflected forms left out ("mit einer
Mitarbeiterin"). The sentences and words to check against are data (phrase_checks.yaml), so a team can read
exactly what is held against its rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from handoff.matching import UNLESS, Pattern
from handoff.problems import Problem
from handoff.ruleset import RuleSet
from handoff.schema import ALL_LOCALES, Phrases

CHECKS = Path(__file__).with_name("phrase_checks.yaml")
TRIGGERS = "triggers.yaml"


@cache
def _checks() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CHECKS.read_text(encoding="utf-8"))
    return data


def phrase_warnings(rules: RuleSet) -> list[Problem]:
    checks = _checks()
    problems: list[Problem] = []
    matcher = rules.matcher
    source = rules.sources.get(TRIGGERS)

    def warn(loc: Sequence[str | int], message: str) -> None:
        line = source.line(list(loc)) if source is not None else None
        problems.append(Problem(TRIGGERS, line, ".".join(map(str, loc)), message, "warning"))

    for name, loc, phrases in _phrase_sets(rules):
        for locale in phrases:
            if locale != ALL_LOCALES and locale not in rules.meta.locales:
                warn([*loc, "phrases", locale],
                     f"{locale!r} is not in ruleset.yaml locales; these phrases are never matched")
        kind = "high_risk" if name.startswith("high_risk.") else name
        for locale in rules.meta.locales:
            for sentence in checks["other_senses"].get(locale, {}).get(kind, []):
                found = matcher.search(name, sentence)
                if found.hit is not None:
                    warn([*loc, "phrases"], f"{_describe(found.hit.pattern)} matches {sentence!r}, where "
                         f'"{found.hit.words}" means something else; write it with context or add an '
                         "`unless:` pattern")
        guarded = {p.locale for p in matcher.patterns.get(name + UNLESS, ())}
        for pattern in matcher.patterns.get(name, ()):
            common = set(checks["common_words"].get(pattern.locale, []))
            if pattern.locale not in guarded and _one_word(pattern) & common:
                warn([*loc, "phrases"], f"{_describe(pattern)} is one everyday word alone; it fires on "
                     "ordinary questions. Give it a second word (a pattern) or an `unless:` list")

    er = rules.triggers.explicit_request
    if er.enabled and er.phrases:
        for locale in rules.meta.locales:
            for probe in checks["inflections"].get(locale, []):
                if matcher.search("explicit_request", probe["says"]).hit is None:
                    warn(["explicit_request", "phrases"],
                         f"no {locale} phrase matches {probe['says']!r} ({probe['form']}); customers inflect "
                         "the request this way")
    return problems


def _phrase_sets(rules: RuleSet) -> Iterator[tuple[str, list[str | int], Mapping[str, Sequence[str]]]]:
    triggers = rules.triggers
    named: list[tuple[str, list[str | int], Phrases]] = [
        ("explicit_request", ["explicit_request"], triggers.explicit_request.phrases),
        ("unsupported_workflow", ["unsupported_workflow"], triggers.unsupported_workflow.phrases),
        ("negative_sentiment", ["negative_sentiment"], triggers.negative_sentiment.phrases),
    ]
    named += [(f"high_risk.{r.id}", ["high_risk", i], r.phrases) for i, r in enumerate(triggers.high_risk)]
    yield from named


def _one_word(pattern: Pattern) -> set[str]:
    """The words of a pattern that is a single word (with alternatives): nothing else has to match."""
    if len(pattern.parts) != 1 or len(pattern.parts[0].slots) != 1:
        return set()
    return set(pattern.words)


def _describe(pattern: Pattern) -> str:
    return f"the {pattern.locale} phrase {pattern.source!r}"
