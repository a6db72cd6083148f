"""structlog set-up: JSON lines in production, readable lines on a terminal, ids bound per request."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Customer content and phone numbers: kept out of every line above DEBUG, whoever logs them.
_PRIVATE_KEYS = frozenset({"text", "body", "phone", "from_number", "to_number", "email", "name"})


def _redact_private(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if method != "debug":
        for key in _PRIVATE_KEYS.intersection(event):
            event[key] = "[redacted]"
    return event


def configure_logging(level: str, fmt: str) -> None:
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_private,
            structlog.processors.format_exc_info if json_lines else structlog.processors.StackInfoRenderer(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp's access log would print every request line; our middleware logs what matters.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
