"""rustc's JSON diagnostics as data.

Takes what rustc wrote on stderr. Gives a ``DiagnosticStream`` of ``Diagnostic``s (with
file paths made absolute by ``absolutize``), and the ``(kind, path)`` of each artifact
notice. With ``--error-format=json`` rustc writes one JSON object per line on stderr. Other
text can still appear on the same stream (an internal compiler error, a crashed codegen
backend, a wrapper's message); it is kept as plain lines rather than lost.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SUMMARY = re.compile(r"^(aborting due to .*|\d+ warnings? emitted.*)$")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def is_summary_line(message: str, has_span: bool = False) -> bool:
    """rustc's closing counts, which repeat what the diagnostics before them said: "aborting
    due to 2 previous errors" (with "; 1 warning emitted" when there were warnings too) and
    "3 warnings emitted". They never point at code. "For more information…" and "Some errors
    have detailed explanations…" are ``failure-note`` diagnostics, not counts."""
    return not has_span and bool(_SUMMARY.match(message))


def is_summary_dict(diagnostic: Mapping[str, Any]) -> bool:
    """:func:`is_summary_line` for a diagnostic in protocol form (:meth:`Diagnostic.to_dict`)."""
    return is_summary_line(str(diagnostic.get("message", "")), has_span=bool(diagnostic.get("spans")))


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    column: int
    line_end: int
    column_end: int
    label: str | None = None

    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Diagnostic:
    level: str  # "error", "warning", "note", "help", "failure-note", "error: internal compiler error"
    message: str
    code: str | None = None
    rendered: str | None = None
    span: Span | None = None  # the primary span, when there is one
    children: tuple[Diagnostic, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.level.startswith("error")

    @property
    def is_summary(self) -> bool:
        """rustc's closing counts ("aborting due to 2 previous errors", "1 warning emitted")."""
        return is_summary_line(self.message, has_span=self.span is not None)

    def summary(self) -> str:
        """One line: ``src/main.rs:3:5: error[E0425]: cannot find value `x` in this scope``."""
        head = f"{self.level}[{self.code}]" if self.code else self.level
        where = f"{self.span.location()}: " if self.span else ""
        return f"{where}{head}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """Protocol form: rustc's JSON diagnostic shape (``spans`` with ``file_name``,
        ``line_start``…, ``code`` as an object) plus a flat ``span`` for convenience."""
        span = None
        spans = []
        if self.span is not None:
            span = asdict(self.span)
            spans.append(
                {
                    "file_name": self.span.file,
                    "line_start": self.span.line,
                    "line_end": self.span.line_end,
                    "column_start": self.span.column,
                    "column_end": self.span.column_end,
                    "is_primary": True,
                    "label": self.span.label,
                }
            )
        return {
            "level": self.level,
            "message": self.message,
            "code": {"code": self.code} if self.code else None,
            "rendered": self.rendered,
            "span": span,
            "spans": spans,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True)
class DiagnosticStream:
    """Everything rustc said on stderr: parsed diagnostics and the lines that were not JSON."""

    diagnostics: tuple[Diagnostic, ...] = ()
    other_lines: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.level == "warning" and not d.is_summary)


def _span(raw: dict[str, Any]) -> Span:
    return Span(
        file=str(raw.get("file_name", "")),
        line=int(raw.get("line_start", 0)),
        column=int(raw.get("column_start", 0)),
        line_end=int(raw.get("line_end", raw.get("line_start", 0))),
        column_end=int(raw.get("column_end", raw.get("column_start", 0))),
        label=raw.get("label"),
    )


def _primary_span(spans: list[dict[str, Any]]) -> Span | None:
    if not spans:
        return None
    primary = next((s for s in spans if s.get("is_primary")), spans[0])
    # A span inside a macro from std (``/rustc/<hash>/library/…``) or a synthetic file
    # (``<…>``) is not the user's code: walk out to where the macro was invoked.
    while _outside_user_code(primary):
        expansion = primary.get("expansion")
        if not (isinstance(expansion, dict) and isinstance(expansion.get("span"), dict)):
            break
        primary = expansion["span"]
    return _span(primary)


def _outside_user_code(span: dict[str, Any]) -> bool:
    name = str(span.get("file_name", ""))
    return name.startswith(("<", "/rustc/"))


def parse_diagnostic(raw: dict[str, Any]) -> Diagnostic:
    """One rustc JSON diagnostic object (``$message_type`` "diagnostic") → Diagnostic."""
    code = raw.get("code")
    return Diagnostic(
        level=str(raw.get("level", "error")),
        message=str(raw.get("message", "")),
        code=code.get("code") if isinstance(code, dict) else None,
        rendered=raw.get("rendered"),
        span=_primary_span(list(raw.get("spans") or [])),
        children=tuple(parse_diagnostic(c) for c in raw.get("children") or () if isinstance(c, dict)),
    )


def artifact_notice(line: str | bytes) -> tuple[str, str] | None:
    """``(kind, path)`` if ``line`` is rustc's ``--json=artifacts`` notice, such as
    ``{"$message_type":"artifact","artifact":"deps/libx.rmeta","emit":"metadata"}``."""
    stripped = line.strip()
    opens = stripped.startswith(b"{") if isinstance(stripped, bytes) else stripped.startswith("{")
    if not opens:
        return None
    try:
        raw = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("$message_type") != "artifact":
        return None
    kind, path = raw.get("emit"), raw.get("artifact")
    if isinstance(kind, str) and isinstance(path, str):
        return kind, path
    return None


def parse_stream(text: str | Iterable[str]) -> DiagnosticStream:
    """Split rustc's stderr into diagnostics and other lines.

    JSON lines that are not diagnostics (artifact notices, future-incompat reports) are
    skipped; lines that fail to parse are kept as text.
    """
    lines = text.splitlines() if isinstance(text, str) else text
    diagnostics: list[Diagnostic] = []
    other: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("{"):
            try:
                raw = json.loads(stripped)
            except ValueError:
                other.append(line.rstrip("\n"))
                continue
            if isinstance(raw, dict):
                if raw.get("$message_type", "diagnostic") == "diagnostic" and "message" in raw:
                    diagnostics.append(parse_diagnostic(raw))
                continue
        other.append(line.rstrip("\n"))
    return DiagnosticStream(tuple(diagnostics), tuple(other))


def absolutize(diagnostic: Diagnostic, cwd: str) -> Diagnostic:
    """rustc reports files relative to the directory it ran in; make them absolute."""

    def fix(span: Span | None) -> Span | None:
        if span is None or not span.file or os.path.isabs(span.file) or span.file.startswith("<"):
            return span
        return replace(span, file=os.path.normpath(os.path.join(cwd, span.file)))

    return replace(
        diagnostic,
        span=fix(diagnostic.span),
        children=tuple(absolutize(c, cwd) for c in diagnostic.children),
    )
