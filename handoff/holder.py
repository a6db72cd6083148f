"""The rule set in force, swapped whole on reload; an invalid candidate is refused and the old set stays.

Loading reads files and may build language models, so it runs in a worker thread; only the swap happens on
the event loop, which keeps every decision on one consistent set.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from handoff.loader import load_rules
from handoff.ruleset import RuleSet
from handoff.signals import SignalReader, default_signal_reader
from sessions.models import utcnow

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    rules: RuleSet
    signals: SignalReader
    loaded_at: datetime


def _load(directory: Path, previous: Loaded | None) -> Loaded:
    rules = load_rules(directory)
    _ = rules.classifier  # trained here, in the loading thread, not on the first customer message
    if previous is not None and previous.rules.meta.locales == rules.meta.locales:
        signals = previous.signals
    else:
        signals = default_signal_reader(rules.meta.locales)
    return Loaded(rules, signals, utcnow())


class RulesHolder:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded = _load(directory, None)
        self._reload_lock = asyncio.Lock()

    @property
    def rules(self) -> RuleSet:
        return self._loaded.rules

    @property
    def signals(self) -> SignalReader:
        return self._loaded.signals

    @property
    def loaded_at(self) -> datetime:
        return self._loaded.loaded_at

    async def reload(self) -> tuple[RuleSet, bool]:
        """Load the directory again; returns the set in force and whether it changed.

        Raises handoff.loader.RulesError (the old set stays in force) when the files are invalid.
        """
        async with self._reload_lock:
            previous = self._loaded
            candidate = await asyncio.to_thread(_load, self.directory, previous)
            changed = candidate.rules.digest != previous.rules.digest
            if changed:
                self._loaded = candidate
            log.info("rules.reloaded", version=self.rules.version, changed=changed,
                     previous=previous.rules.version)
            return self.rules, changed
