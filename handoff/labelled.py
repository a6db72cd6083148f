"""Labelled customer messages: the evaluation sets `rules eval` measures with, and the examples a rule set's
classifier learns from. One format for both (docs/rules.md, "Measuring triggers").

Kept apart from the policy so the rule set can read examples without importing what decides.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from handoff.problems import Problem, RulesError
from handoff.sources import SourceMap
from handoff.yaml_text import read_yaml

NONE = "none"
Kind = Literal["paraphrase", "typo", "inflection", "word_order", "negation", "false_friend", "mixed_language",
               "channel_style", "plain"]
# Friday 2026-11-27 10:00 in New York: every demo team is open, so only the triggers decide.
DEFAULT_AT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    """The issue's bar for a rule change (docs/rules.md): what `rules eval` fails under."""

    explicit_request_recall: float = 0.98
    high_risk_recall: float = 0.95
    none_precision: float = 0.97
    # Each locale's share of right decisions may trail English's by at most this much.
    locale_gap: float = 0.05


class Item(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    locale: Annotated[str, Field(pattern=r"^[a-z]{2}$")]
    channel: Literal["webchat", "sms", "whatsapp", "voice"] = "webchat"
    says: str | None = None
    turns: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=10)
    expect: Annotated[str, Field(min_length=1)]
    kinds: list[Kind] = Field(default_factory=list)
    verified: bool = False

    @model_validator(mode="after")
    def _one_text(self) -> Item:
        if (self.says is None) == (not self.turns):
            raise ValueError("an item has either says: (one message) or turns: (a conversation)")
        return self

    @property
    def messages(self) -> list[str]:
        return [self.says] if self.says is not None else list(self.turns)


class EvalSet(_Strict):
    part: Literal["dev", "test"] | None = None
    at: AwareDatetime = DEFAULT_AT
    thresholds: Thresholds = Thresholds()
    items: list[Item] = Field(min_length=1)


def load_set(path: Path) -> EvalSet:
    """Read an evaluation set; RulesError names the file, line and field of every mistake."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError([Problem(str(path), None, "", f"cannot be read: {exc.strerror}")]) from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise RulesError([Problem(str(path), line, "", f"not valid YAML: {exc}")]) from None
    try:
        loaded = EvalSet.model_validate(data)
    except ValidationError as exc:
        source = SourceMap(text)
        raise RulesError([
            Problem(str(path), source.line(list(e["loc"])), ".".join(map(str, e["loc"])),
                    e["msg"].removeprefix("Value error, "))
            for e in exc.errors()
        ]) from None
    duplicates = [i for i, n in Counter(item.id for item in loaded.items).items() if n > 1]
    if duplicates:
        raise RulesError([Problem(str(path), None, "items", f"duplicate ids: {', '.join(duplicates)}")])
    return loaded


