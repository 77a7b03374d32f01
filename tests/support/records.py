"""Capture records made in tests, as the shims would write them."""

from __future__ import annotations

from collections.abc import Iterable

from capture.store import LinkRecord


def link_line(
    linker: str, args: Iterable[str], cwd: str | None = None, output: str = "/ws/target/debug/app"
) -> LinkRecord:
    """A captured link line of ``linker`` with ``args`` (``@file`` arguments already expanded)."""
    return LinkRecord(linker=linker, args=tuple(args), output=output, recorded_at=1.0, cwd=cwd)
