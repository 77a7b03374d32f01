"""Colour for the commands' output: when to use it, and the few styles they share.

Colour is on for a terminal, off for a pipe or a file, off when NO_COLOR is set
(https://no-color.org) or TERM is `dumb`; `--color always|never` overrides all of that.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from typing import TextIO

COLOR_CHOICES = ("auto", "always", "never")

_RESET = "\x1b[0m"
_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}


def add_color_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--color",
        choices=COLOR_CHOICES,
        default="auto",
        help="colour the output: auto (on a terminal, unless NO_COLOR is set), always or never",
    )


def wants_color(choice: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    if choice == "always":
        return True
    if choice == "never":
        return False
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Style:
    """Wraps text in ANSI colours, or returns it unchanged when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}{_RESET}"

    def ok(self, text: str) -> str:
        return self.paint(text, "green")

    def bad(self, text: str) -> str:
        return self.paint(text, "bold", "red")

    def warn(self, text: str) -> str:
        return self.paint(text, "yellow")

    def quiet(self, text: str) -> str:
        return self.paint(text, "dim")

    def strong(self, text: str) -> str:
        return self.paint(text, "bold")

    def code(self, text: str) -> str:
        return self.paint(text, "cyan")


PLAIN = Style(False)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADLINE = re.compile(r"^(error|warning|note|help)(\[[^\]]+\])?(:)(.*)$")
_GUTTER = re.compile(r"^( *\d* *\|)(.*)$")
_ARROW = re.compile(r"^( *)(-->|::: )(.*)$")
_NOTE = re.compile(r"^( *)(= )(note|help)(:)(.*)$")
_LEVEL_COLOURS = {"error": "red", "warning": "yellow", "note": "green", "help": "cyan"}


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def colour_rendered(rendered: str, style: Style) -> str:
    """rustc's plain rendered diagnostic, coloured the way cargo colours it on a terminal."""
    text = strip_ansi(rendered)
    if not style.enabled:
        return text
    out = []
    for line in text.split("\n"):
        if m := _HEADLINE.match(line):
            level, code, colon, rest = m.groups()
            colour = _LEVEL_COLOURS[level]
            out.append(style.paint(level + (code or ""), "bold", colour) + style.strong(colon + rest))
        elif m := _ARROW.match(line):
            out.append(m.group(1) + style.paint(m.group(2), "bold", "blue") + m.group(3))
        elif m := _NOTE.match(line):
            indent, eq, level, colon, rest = m.groups()
            out.append(indent + style.paint(eq, "bold", "blue") + style.strong(level + colon) + rest)
        elif m := _GUTTER.match(line):
            out.append(style.paint(m.group(1), "bold", "blue") + m.group(2))
        else:
            out.append(line)
    return "\n".join(out)
