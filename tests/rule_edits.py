"""Edits tests make to a copy of the demo triggers.yaml, by the file's own markers."""

from __future__ import annotations

_CLASSIFIER_END = "  min_probability: 0.5\n"


def without_classifier(text: str) -> str:
    """The triggers without their classifier: phrases alone decide."""
    start = text.index("classifier:\n")
    end = text.index(_CLASSIFIER_END, start) + len(_CLASSIFIER_END)
    return text[:start] + text[end:]


def with_explicit_phrases(text: str, phrases: str) -> str:
    """The explicit-request phrases (every language's lists) replaced by ``phrases``, a YAML line."""
    start = text.index("  phrases:\n    en:\n")
    end = text.index("  unless:\n", start)
    return text[:start] + f"  phrases: {phrases}\n" + text[end:]
