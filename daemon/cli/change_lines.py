"""How `run` and `watch` name a patch's changed functions and its verdict (pure).

Events carry each changed function's full path (``app::world::frame``); people read the
last segment with parentheses (``frame()``), a closure as ``a closure in main()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from daemon.analysis.names import short_name

__all__ = ["changed_names", "located", "named_list", "short_name", "uncertain", "what_changed"]

SHOWN = 4  # names listed before "and N more"


def named_list(names: Iterable[str]) -> str:
    """``frame(), greet()``, at most :data:`SHOWN` names and then ``and N more``."""
    unique = list(dict.fromkeys(names))
    shown = ", ".join(unique[:SHOWN])
    if len(unique) > SHOWN:
        shown += f" and {len(unique) - SHOWN} more"
    return shown


def what_changed(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The changes this save made: new since the previous patch, in the workspace's own code
    (not another crate's generic the patch compiled anew)."""
    return [c for c in event.get("changes") or [] if c.get("new", True) and not c.get("foreign")]


def changed_names(event: Mapping[str, Any]) -> str:
    """The functions a patch-ready or restart-required event says this save changed."""
    return named_list(short_name(str(c.get("function"))) for c in what_changed(event))


def located(change: Mapping[str, Any]) -> str:
    """``frame() (src/main.rs:12)``, without the place when it isn't known."""
    name = short_name(str(change.get("function")))
    if change.get("file"):
        return f"{name} ({change['file']}:{change.get('line')})"
    return name


def uncertain(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The changes whose reach could not be settled (verdict ``unknown``)."""
    return [c for c in event.get("changes") or [] if c.get("verdict") == "unknown"]
