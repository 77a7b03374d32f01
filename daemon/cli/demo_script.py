"""`thinpatch demo`, the pure part: the scripted edits, how the app's output is read and
checked, and the reports (progress lines, the summary table, the JSON summary).

Nothing here touches files or processes; ``daemon.cli.demo`` runs the script.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from daemon.cli.terminal import PLAIN, Style

SCENE_FILE = "src/scene.rs"
APP_BINARY = "demo-app"
# The value the app's environment carries for the step that starts reading it.
DEMO_GREETING = "hello-from-the-environment"

PATCH = "patch"
COMPILE_ERROR = "compile-error"

OUTCOME_TYPES = ("patch-ready", "build-failed", "patch-rejected", "full-rebuild-required")

RUSTUP_HINT = (
    "Install Rust with rustup (https://rustup.rs):\n"
    "    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh\n"
    "then open a new shell (or run `. \"$HOME/.cargo/env\"`) so that `cargo` is on PATH, "
    "and run `thinpatch demo` again."
)


@dataclass(frozen=True)
class Tick:
    """One `TICK <counter> | <title> | <formula> | <extra>` line of the app."""

    counter: int
    title: str
    formula: str
    extra: str
    line: str


def parse_tick(line: str) -> Tick | None:
    if not line.startswith("TICK "):
        return None
    parts = [p.strip() for p in line[len("TICK ") :].split("|")]
    if len(parts) != 4 or not parts[0].isdigit():
        return None
    return Tick(int(parts[0]), parts[1], parts[2], parts[3], line)


@dataclass(frozen=True)
class DemoStep:
    name: str
    description: str
    old: str  # text replaced in src/scene.rs (must be present when the step runs)
    new: str
    kind: str  # PATCH or COMPILE_ERROR
    # For PATCH steps: the output the app must show, given its counter on that tick.
    shows: Callable[[Tick], bool] = lambda tick: True
    expected: str = ""  # the same, in words, for the reports
    field: str = "title"  # the part of a tick line this step changes: title, formula or extra

    def apply(self, source: str) -> str:
        if source.count(self.old) != 1:
            raise ValueError(f"the text this step replaces is not in {SCENE_FILE} exactly once: {self.old!r}")
        return source.replace(self.old, self.new)

    def edited_line(self, source: str) -> int:
        """1-based line of the first changed line once applied to ``source``."""
        return source[: source.index(self.old)].count("\n") + 1 + _leading_same_lines(self.old, self.new)


def _leading_same_lines(old: str, new: str) -> int:
    same = 0
    for a, b in zip(old.split("\n"), new.split("\n")):
        if a != b:
            break
        same += 1
    return same


NEW_STD_API = """\
pub fn extra(_n: u64) -> String {
    let mut letters = std::collections::BTreeMap::new();
    for letter in "thinpatch".chars() {
        *letters.entry(letter).or_insert(0u32) += 1;
    }
    let greeting = std::env::var("THINPATCH_DEMO_GREETING").unwrap_or_else(|_| String::from("unset"));
    format!("letters={} t={} env={}", letters.len(), letters[&'t'], greeting)
}"""

STEPS: tuple[DemoStep, ...] = (
    DemoStep(
        name="changed string",
        description='title(): "Hello from a running process" -> "Hello, hot-patched world!"',
        old='String::from("Hello from a running process")',
        new='String::from("Hello, hot-patched world!")',
        kind=PATCH,
        shows=lambda t: t.title == "Hello, hot-patched world!",
        expected="title is 'Hello, hot-patched world!'",
    ),
    DemoStep(
        name="changed formula",
        description="formula(): n + n -> n * n",
        old='format!("n + n = {}", n + n)',
        new='format!("n * n = {}", n * n)',
        kind=PATCH,
        shows=lambda t: t.formula == f"n * n = {t.counter * t.counter}",
        expected="formula shows n * n for the current counter",
        field="formula",
    ),
    DemoStep(
        name="new std API",
        description="extra(): starts using std::collections::BTreeMap and std::env::var",
        old='pub fn extra(_n: u64) -> String {\n    String::from("no extras yet")\n}',
        new=NEW_STD_API,
        kind=PATCH,
        shows=lambda t: t.extra == f"letters=7 t=2 env={DEMO_GREETING}",
        expected=f"extra is 'letters=7 t=2 env={DEMO_GREETING}'",
        field="extra",
    ),
    DemoStep(
        name="compile error",
        description='formula(): adds a &str to a number: n * n + "1"',
        old='format!("n * n = {}", n * n)',
        new='format!("n * n = {}", n * n + "1")',
        kind=COMPILE_ERROR,
        # The app keeps running the last good code.
        shows=lambda t: t.formula == f"n * n = {t.counter * t.counter}",
        expected="build-failed at src/scene.rs:<line>; the app keeps running the previous code",
        field="formula",
    ),
    DemoStep(
        name="fix",
        description="formula(): fixed to n * n + 1",
        old='format!("n * n = {}", n * n + "1")',
        new='format!("n * n + 1 = {}", n * n + 1)',
        kind=PATCH,
        shows=lambda t: t.formula == f"n * n + 1 = {t.counter * t.counter + 1}",
        expected="formula shows n * n + 1 for the current counter",
        field="formula",
    ),
)


# --------------------------------------------------------------------------- events


def is_outcome(event: dict[str, Any]) -> bool:
    return not event.get("replayed") and event.get("type") in OUTCOME_TYPES


@dataclass(frozen=True)
class ErrorLocation:
    file: str
    line: int
    column: int
    message: str


def compile_error_location(event: dict[str, Any], relative_to: str | os.PathLike | None = None) -> ErrorLocation | None:
    """Where the first error of a `build-failed` event points (its primary span); the file is
    made relative to ``relative_to`` when it lies under it."""
    for diagnostic in event.get("diagnostics") or []:
        if diagnostic.get("level") != "error":
            continue
        for span in diagnostic.get("spans") or []:
            if span.get("is_primary"):
                file = span.get("file_name", "?")
                if relative_to is not None and os.path.isabs(file):
                    relative = os.path.relpath(file, relative_to)
                    file = file if relative.startswith("..") else relative
                line, column = int(span.get("line_start", 0)), int(span.get("column_start", 0))
                return ErrorLocation(file, line, column, diagnostic.get("message", ""))
    return None


def first_rendered_error(event: dict[str, Any]) -> str:
    for diagnostic in event.get("diagnostics") or []:
        if diagnostic.get("level") == "error":
            return (diagnostic.get("rendered") or diagnostic.get("message") or "").rstrip()
    return event.get("message") or event.get("reason") or ""


def describe_unexpected_outcome(event: dict[str, Any]) -> str:
    kind = event.get("type")
    if kind == "build-failed":
        return f"the build failed: {first_rendered_error(event)}"
    if kind == "patch-rejected":
        missing = ", ".join(event.get("missing_symbols") or [])
        return f"the patch was rejected: {event.get('reason')}" + (f" (missing: {missing})" if missing else "")
    if kind == "full-rebuild-required":
        return f"the daemon asked for a full rebuild: {event.get('reason')}"
    return f"unexpected {kind}"


# --------------------------------------------------------------------------- results


@dataclass
class StepResult:
    number: int
    name: str
    description: str
    kind: str
    expected: str
    status: str = "not run"  # passed, failed, interrupted, not run
    outcome: str | None = None  # the daemon's event type
    build_id: Any = None
    timings: dict[str, float] = field(default_factory=dict)
    seen_ms: float | None = None  # save -> the app's output shows it
    counter: int | None = None
    output: str | None = None
    error: ErrorLocation | None = None
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "expected": self.expected,
            "status": self.status,
            "outcome": self.outcome,
            "build_id": self.build_id,
            "timings": self.timings,
            "seen_ms": self.seen_ms,
            "counter": self.counter,
            "output": self.output,
            "error": None if self.error is None else vars(self.error),
            "problem": self.problem,
        }


@dataclass
class DemoReport:
    steps: list[StepResult] = field(default_factory=list)
    problem: str | None = None
    hint: str | None = None
    directory: str | None = None
    kept: bool = False
    source_file: str | None = None
    app_pid: int | None = None
    socket: str | None = None
    capture_s: float | None = None
    first_patch_ms: float | None = None
    duration_s: float | None = None
    steps_s: float | None = None  # start -> every scripted step observed
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        steps_passed = bool(self.steps) and all(s.passed for s in self.steps)
        return self.problem is None and steps_passed and counters_increase(self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problem": self.problem,
            "hint": self.hint,
            "steps": [s.to_json() for s in self.steps],
            "counter_never_reset": counters_increase(self.steps),
            "app_pid": self.app_pid,
            "directory": self.directory,
            "kept": self.kept,
            "source_file": self.source_file,
            "socket": self.socket,
            "capture_s": self.capture_s,
            "first_patch_ms": self.first_patch_ms,
            "duration_s": self.duration_s,
            "steps_s": self.steps_s,
            "interrupted": self.interrupted,
        }


def counters_increase(steps: list[StepResult]) -> bool:
    """The counter seen at each observed step is larger than at the one before: never reset."""
    seen = [s.counter for s in steps if s.counter is not None]
    return all(b > a for a, b in itertools.pairwise(seen))


def pending_steps(steps: tuple[DemoStep, ...] = STEPS) -> list[StepResult]:
    return [StepResult(i, s.name, s.description, s.kind, s.expected) for i, s in enumerate(steps, 1)]


# --------------------------------------------------------------------------- text

WIDTH = 100  # the widest line the demo prints (the app's own lines aside)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _fit(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def step_heading(result: StepResult, total: int, style: Style = PLAIN) -> str:
    label = f"step {result.number}/{total}"
    return style.strong(label) + _fit(f"{label}  {result.name}: {result.description}")[len(label):]


def shown_part(tick: Tick, field: str) -> str:
    return {"title": tick.title, "formula": tick.formula, "extra": tick.extra}.get(field, tick.line)


def step_outcome_lines(result: StepResult, style: Style = PLAIN, field: str | None = None) -> list[str]:
    lines = []
    if result.outcome == "patch-ready" and result.timings:
        t = result.timings
        lines.append(
            f"    patch built in {_ms(t.get('total_ms'))} ms (rustc {_ms(t.get('rustc_ms'))}, "
            f"link {_ms(t.get('link_ms'))}, verify {_ms(t.get('verify_ms'))})"
        )
    if result.error is not None:
        e = result.error
        lines.append(_fit(f"    compile error at {e.file}:{e.line}:{e.column}: {e.message}"))
    if result.output is not None:
        tick = parse_tick(result.output)
        seen = f", {_ms(result.seen_ms)} ms after the save" if result.seen_ms is not None else ""
        if tick is not None and field is not None:
            kept = " (still the previous code)" if result.kind == COMPILE_ERROR else ""
            lines.append(_fit(f"    the app at tick {tick.counter}{seen}: {shown_part(tick, field)}{kept}"))
        else:
            lines.append(_fit(f"    the app{seen}: {result.output}"))
    if result.passed:
        lines.append("    " + style.ok("ok"))
    elif result.problem:
        lines.append(f"    {style.bad('FAILED')}: {result.problem}")
    return lines


def result_word(result: StepResult) -> str:
    """What happened, in a word or two: `patched`, `error shown`, `FAILED`, `not run`."""
    if result.status == "passed":
        return "error shown" if result.kind == COMPILE_ERROR else "patched"
    return {"failed": "FAILED"}.get(result.status, result.status)


def summary_table(steps: list[StepResult], style: Style = PLAIN) -> str:
    """One row of figures per step, and under it what the app showed (or the error)."""
    headers = ("step", "edit", "result", "rustc ms", "total ms", "seen ms", "counter")
    rows = []
    details = []
    for s in steps:
        t = s.timings
        rows.append(
            (
                str(s.number),
                s.name,
                result_word(s),
                _ms(t.get("rustc_ms")),
                _ms(t.get("total_ms")),
                _ms(s.seen_ms),
                "-" if s.counter is None else str(s.counter),
            )
        )
        if s.error is not None:
            detail = f"{s.error.file}:{s.error.line}: {s.error.message}"
        elif s.problem and not s.passed:
            detail = s.problem
        else:
            detail = s.output or ""
            tick = parse_tick(detail)
            if tick is not None:  # the counter has its own column
                detail = f"{tick.title} | {tick.formula} | {tick.extra}"
        details.append(detail)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = {3, 4, 5, 6}
    indent = " " * (widths[0] + 2)

    def fmt(row: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    def painted(row: tuple[str, ...]) -> str:
        text = fmt(row)
        word = row[2]
        colour = style.ok if word in ("patched", "error shown") else style.bad if word == "FAILED" else style.quiet
        return text.replace(f"  {word}", f"  {colour(word)}", 1) if word else text

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    for row, detail in zip(rows, details):
        lines.append(painted(row))
        if detail:
            lines.append(_fit(indent + detail))
    return "\n".join(lines)


def final_message(report: DemoReport, style: Style = PLAIN) -> str:
    passed = sum(s.passed for s in report.steps)
    if report.ok:
        counters = [s.counter for s in report.steps if s.counter is not None]
        took = report.steps_s if report.steps_s is not None else report.duration_s
        return style.ok(
            f"All {len(report.steps)} steps observed in {took:.1f} s; the app's counter went "
            f"{counters[0]} -> {counters[-1]} without a restart."
        )
    lines = [style.bad(f"thinpatch demo failed: {passed} of {len(report.steps)} steps observed.")]
    if report.problem:
        lines.append(f"problem: {report.problem}")
    if report.steps and not counters_increase(report.steps):
        lines.append("problem: the app's counter went backwards: it was restarted or its state was lost.")
    if report.hint:
        lines.append(report.hint)
    return "\n".join(lines)


def next_step(style: Style = PLAIN) -> str:
    """What to do after a demo that worked: the same on your own program."""
    return "\n".join(
        [
            style.strong("Next: hot-patch your own program."),
            "  cd path/to/your/cargo/project",
            "  thinpatch init    adds the client crate (thinpatch-client) and shows the two lines to call",
            "  thinpatch run     builds and runs your program; every save patches it while it runs",
        ]
    )
