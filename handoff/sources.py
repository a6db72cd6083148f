"""Where a YAML node stands in its file, so a problem found in a rule or a scenario names its line.

A module of its own: the rule set keeps the source of each file it was loaded from, and the loader builds
the rule set, so keeping this in either would tie the two in a circle.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from handoff.yaml_text import compose_yaml


class SourceMap:
    """Line numbers of YAML nodes, so an error about ``queues.billing.hours`` points at its line."""

    def __init__(self, text: str) -> None:
        try:
            self._root: yaml.Node | None = compose_yaml(text)
        except yaml.YAMLError:
            self._root = None

    def line(self, loc: Sequence[str | int]) -> int | None:
        node = self._root
        found = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                entry = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(part)), None)
                if entry is None:
                    break
                key, node = entry
                found = key.start_mark.line + 1  # the line that names the field
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                found = node.start_mark.line + 1
            else:
                break
        return found
