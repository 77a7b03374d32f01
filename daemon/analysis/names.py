"""How people read a function's path: ``app::world::frame`` is ``frame()``."""

from __future__ import annotations


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
