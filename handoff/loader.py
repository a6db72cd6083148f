"""Reads a rules directory into a RuleSet, or says exactly where it is wrong (file, line, field).

The content hash covers every rule file byte for byte, so two gateways that report the same version and
hash decide the same way, and a decision's recorded version identifies the rules it was made under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from handoff.labelled import Item, load_set
from handoff.lint import lint
from handoff.problems import Problem, RulesError
from handoff.ruleset import RuleSet
from handoff.schema import (
    FILES,
    MessagesFile,
    QueuesFile,
    RoutingFile,
    RuleSetMeta,
    TriggersFile,
)
from handoff.sources import SourceMap
from handoff.yaml_text import read_yaml

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LoadedFile:
    name: str
    data: Any
    source: SourceMap
    raw: bytes


def _field(loc: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith(("function-", "str"))))


def _read(directory: Path, name: str, problems: list[Problem]) -> LoadedFile | None:
    path = directory / name
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(Problem(name, None, "", "file is missing"))
        return None
    except OSError as exc:
        problems.append(Problem(name, None, "", f"cannot be read: {exc.strerror}"))
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problems.append(Problem(name, line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}"))
        return None
    return LoadedFile(name, data if data is not None else {}, SourceMap(text), raw)


def _validate(loaded: LoadedFile, model: type[M], problems: list[Problem]) -> M | None:
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            message = error["msg"].removeprefix("Value error, ")
            problems.append(Problem(loaded.name, loaded.source.line(loc), _field(loc), message))
        return None


def content_hash(files: Sequence[LoadedFile]) -> str:
    digest = hashlib.sha256()
    for loaded in sorted(files, key=lambda f: f.name):
        digest.update(loaded.name.encode() + b"\0" + loaded.raw + b"\0")
    return digest.hexdigest()


def load_rules(directory: Path) -> RuleSet:
    """Load and check a rules directory. Raises RulesError listing every error found."""
    if not directory.is_dir():
        raise RulesError([Problem(str(directory), None, "", "is not a directory")])
    problems: list[Problem] = []
    loaded = {name: _read(directory, name, problems) for name in FILES}
    models: dict[str, Any] = {}
    for name, model in FILES.items():
        file = loaded[name]
        if file is not None:
            models[name] = _validate(file, model, problems)
    if problems or any(m is None for m in models.values()):
        raise RulesError(problems)
    files = [f for f in loaded.values() if f is not None]
    triggers = _as(models["triggers.yaml"], TriggersFile)
    examples: list[Item] = []
    example_files: list[LoadedFile] = []
    if triggers.classifier is not None:
        examples, example_files = _examples(directory, triggers.classifier.examples)
    rules = RuleSet(
        directory=directory,
        meta=_as(models["ruleset.yaml"], RuleSetMeta),
        queues=_as(models["queues.yaml"], QueuesFile),
        triggers=triggers,
        routing=_as(models["routing.yaml"], RoutingFile),
        messages=_as(models["messages.yaml"], MessagesFile),
        digest=content_hash([*files, *example_files]),
        sources={f.name: f.source for f in files},
        examples=tuple(examples),
    )
    # The same errors `rules check` reports: a set it fails is never put in force.
    try:
        errors = [p for p in lint(rules) if p.severity == "error"]
    except Exception as exc:  # a check that cannot run must refuse the set, not crash a reload
        raise RulesError([Problem(str(directory), None, "", f"could not be checked: {exc!r}")]) from exc
    if errors:
        raise RulesError(errors)
    return rules


def _examples(directory: Path, patterns: Sequence[str]) -> tuple[list[Item], list[LoadedFile]]:
    """The classifier's labelled examples. Their bytes join the content hash: retraining on other examples
    is another rule set."""
    paths = sorted({path for pattern in patterns for path in directory.glob(pattern) if path.is_file()})
    if not paths:
        raise RulesError([Problem("triggers.yaml", None, "classifier.examples",
                                  f"no file matches {', '.join(patterns)} in {directory}")])
    items: list[Item] = []
    files: list[LoadedFile] = []
    for path in paths:
        items.extend(load_set(path).items)
        files.append(LoadedFile(str(path.relative_to(directory)), None, SourceMap(""), path.read_bytes()))
    return items, files


def _as(value: object, model: type[T]) -> T:
    assert isinstance(value, model)
    return value
