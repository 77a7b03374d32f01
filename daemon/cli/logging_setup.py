"""One logging pipeline for the daemon: structlog renders, stdlib logs join in.

On a TTY the console renderer is used; otherwise JSON lines, one event per line, so
logs from a service manager stay machine-readable. watchfiles (and any other library
using stdlib logging) goes through the same processors and renderer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import Processor

# Keys whose values must never be logged: recorded environments can hold secrets.
REDACTED_KEYS = frozenset({"env", "environ", "environment"})


class _Handler(logging.StreamHandler[TextIO]):
    """thinpatch's own handler: configuring again replaces it and leaves others alone."""


def _redact(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in REDACTED_KEYS & event_dict.keys():
        event_dict[key] = "<redacted>"
    return event_dict


def configure_logging(level: str = "info", *, stream: TextIO | None = None, json_lines: bool | None = None) -> None:
    stream = stream or sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    # Never rich's traceback: it prints every frame's locals (show_locals), and a frame
    # replaying a build holds its recorded environment. Plain tracebacks show code only.
    renderer = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if json_lines else (lambda _l, _m, e: e),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _Handler):
            root.removeHandler(old)
    root.addHandler(handler)
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    # watchfiles logs every batch at INFO; keep it for debugging only.
    logging.getLogger("watchfiles").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=False,
    )
