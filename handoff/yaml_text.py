"""YAML read with libyaml's C parser when PyYAML was built with it, else the pure-Python one.

The rules and their labelled evaluation sets are thousands of lines: parsed in Python they take over a second
at every start and every command that reads the rules (`review`, `rules check`); libyaml reads the same
documents, with the same safe types and line marks, several times faster.
"""

from __future__ import annotations

from typing import Any

import yaml

SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader (libyaml's, or PyYAML's)


def compose_yaml(text: str) -> yaml.Node | None:
    """The node tree with each node's line, for pointing at a mistake."""
    return yaml.compose(text, Loader=SAFE_LOADER)
