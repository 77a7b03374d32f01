"""How `run` and `watch` name a patch's changed functions and its verdict (pure).

Events carry each changed function's full path (``app::world::frame``); people read the
last segment with parentheses (``frame()``), a closure as ``a closure in main()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

SHOWN = 4  # names listed before "and N more"


def short_name(path: str) -> str:
    """``app::world::frame`` → ``frame()``; ``app::main::{{closure}}`` → ``a closure in main()``;
    ``<app::Player as core::fmt::Display>::fmt`` → ``Player::fmt()``."""
    text = path
    closure = False
    while text.endswith("::{{closure}}"):
        text, closure = text[: -len("::{{closure}}")], True
    if text.startswith("<") and ">::" in text:  # <T as Trait>::method
        inner, _, method = text[1:].rpartition(">::")
        typ = inner.split(" as ", 1)[0]
        name = f"{_last_segment(typ)}::{method}()"
    else:
        name = f"{_last_segment(text)}()"
    return f"a closure in {name}" if closure else name


def _last_segment(path: str) -> str:
    depth, cut = 0, 0
    for i, ch in enumerate(path):  # the last `::` outside generic brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == ":" and depth == 0 and path[i : i + 2] == "::":
            cut = i + 2
    return path[cut:]


def named_list(names: Iterable[str]) -> str:
    """``frame(), greet()``, at most :data:`SHOWN` names and then ``and N more``."""
    unique = list(dict.fromkeys(names))
    shown = ", ".join(unique[:SHOWN])
    if len(unique) > SHOWN:
        shown += f" and {len(unique) - SHOWN} more"
    return shown


def changed_names(event: Mapping[str, Any]) -> str:
    """The functions a patch-ready or restart-required event changes, as people read them."""
    return named_list(short_name(str(c.get("function"))) for c in event.get("changes") or [])


def located(change: Mapping[str, Any]) -> str:
    """``frame() (src/main.rs:12)``, without the place when it isn't known."""
    name = short_name(str(change.get("function")))
    if change.get("file"):
        return f"{name} ({change['file']}:{change.get('line')})"
    return name


def uncertain(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The changes whose reach could not be settled (verdict ``unknown``)."""
    return [c for c in event.get("changes") or [] if c.get("verdict") == "unknown"]
