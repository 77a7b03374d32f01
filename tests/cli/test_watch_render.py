"""`thinpatch watch`'s rendering, checked against event streams recorded from a real session
(tests/cli/fixtures/record_watch_streams.py), in colour and plain."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.commands.watch import render_event
from daemon.cli.terminal import PLAIN, Style, strip_ansi, wants_color

FIXTURES = Path(__file__).parent / "fixtures"
COLOUR = Style(True)


def stream(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def no_clock() -> float:
    raise AssertionError("an event with a time was rendered with the current time")


def render(events: list[dict[str, Any]], style: Style = PLAIN, verbose: bool = False) -> str:
    return "\n".join(line for e in events for line in render_event(e, style, verbose=verbose, clock=no_clock))


def at(event: dict[str, Any]) -> str:
    return time.strftime("%H:%M:%S", time.localtime(event["time"]))


LIVE = stream("watch-live.jsonl")
REPLAY = stream("watch-replay.jsonl")


def first(kind: str, events: list[dict[str, Any]] = LIVE, **match: Any) -> dict[str, Any]:
    return next(e for e in events if e["type"] == kind and all(e.get(k) == v for k, v in match.items()))


def test_the_recorded_streams_hold_what_these_tests_check():
    kinds = {e["type"] for e in LIVE}
    assert {"build-started", "patch-ready", "patch-result", "build-failed", "full-rebuild-required"} <= kinds
    assert any(e["type"] == "patch-ready" and e["subscribers"] == 0 for e in LIVE)
    assert all(isinstance(e.get("time"), float) for e in LIVE + REPLAY)
    assert REPLAY and all(e.get("replayed") for e in REPLAY)


def test_a_patch_is_one_line_with_its_time_program_and_timings():
    event = first("patch-ready", id=1)
    lines = render_event(event, clock=no_clock)
    t = event["timings"]
    assert lines[0] == (
        f"{at(event)} patched demo_app (host-debug) in {t['total_ms']:.0f} ms "
        f"(rustc {t['rustc_ms']:.0f} ms, link {t['link_ms']:.0f} ms, verify {t['verify_ms']:.0f} ms; patch 1)"
    )
    assert lines[1:] == [f"  warning: {w}" for w in event["report"]["warnings"]] + ["  sent to 1 process"]


def test_applied_per_process_and_no_process_subscribed():
    result = first("patch-result", id=1)
    assert render_event(result, clock=no_clock) == [f"{at(result)}   applied patch 1 in pid {result['pid']} (demo_app)"]
    failed = {**result, "applied": False, "message": "dlopen: undefined symbol: foo"}
    assert render_event(failed, clock=no_clock)[0].endswith(
        f"failed to apply patch 1 in pid {result['pid']} (demo_app): dlopen: undefined symbol: foo"
    )
    nobody = render_event(first("patch-ready", subscribers=0), clock=no_clock)
    assert nobody[-1].startswith("  no process subscribed: nothing was patched. Start demo_app with `thinpatch run`")


def test_each_compile_error_headline_is_printed_once_with_cargos_rendering():
    event = first("build-failed")
    text = render([event])
    errors = [d for d in event["diagnostics"] if d["level"] == "error" and d["spans"]]
    assert errors
    # rustc's closing count repeats the headline's; it is left out.
    assert "aborting due to" not in text
    for diagnostic in errors:
        headline = diagnostic["rendered"].splitlines()[0]
        assert text.count(diagnostic["message"]) == 1, text
        assert headline in text.splitlines()
        assert diagnostic["rendered"].rstrip("\n") in text  # cargo's text, verbatim
    assert (
        text.splitlines()[0] == f"{at(event)} build failed: demo_app (host-debug) does not compile (1 error, 1 warning)"
    )


def test_compiler_warnings_are_shown_with_a_patch_in_one_line_and_in_full_with_verbose():
    event = next(e for e in LIVE if e["type"] == "patch-ready" and e["report"]["compiler_warnings"])
    warning = event["report"]["compiler_warnings"][0]
    short = render([event])
    assert f"  warning: {warning['message']} (src/scene.rs:{warning['spans'][0]['line_start']}:" in short
    full = render([event], verbose=True)
    assert warning["rendered"].rstrip("\n") in full
    assert event["lib"] in full and event["lib"] not in short


def test_the_patch_reports_own_warnings_are_shown():
    # The recorded app counts calls in a private static of its binary crate.
    event = first("patch-ready", id=1)
    [fresh] = event["report"]["warnings"]
    assert "`demo_app::scene::CALLS` is a private static of a binary crate" in fresh
    assert f"  warning: {fresh}" in render([event]).splitlines()
    assert f"  \x1b[1;33mwarning\x1b[0m: {fresh}" in render([event], COLOUR).splitlines()


def test_builds_starting_show_only_with_verbose_and_name_files_in_the_workspace():
    started = first("build-started")
    assert render_event(started, clock=no_clock) == []
    assert render_event(started, verbose=True, clock=no_clock) == [
        f"{at(started)} building demo_app (host-debug) (src/scene.rs)"
    ]


def test_a_replayed_line_carries_the_time_of_the_event_not_of_the_connection():
    [replayed] = REPLAY
    lines = render_event(replayed, clock=no_clock)
    assert lines[0].startswith(f"{at(replayed)} (current) patched demo_app (host-debug)")
    # What was sent then is history: the replay doesn't repeat "no process subscribed".
    assert not any("no process subscribed" in line for line in lines)


def test_an_event_without_a_time_from_an_older_daemon_uses_the_clock():
    event = {k: v for k, v in first("patch-ready", id=1).items() if k != "time"}
    assert render_event(event, clock=lambda: 0.0)[0].startswith(time.strftime("%H:%M:%S ", time.localtime(0)))


def test_full_rebuild_names_the_file_and_the_fix():
    event = first("full-rebuild-required")
    [line] = render_event(event, clock=no_clock)
    assert line.startswith(f"{at(event)} full rebuild required (Cargo.toml): Cargo.toml changed")
    assert "thinpatch capture" in line


@pytest.mark.parametrize("verbose", [False, True])
def test_colour_adds_only_escapes_to_the_plain_text(verbose):
    for events in (LIVE, REPLAY):
        plain = render(events, verbose=verbose)
        coloured = render(events, COLOUR, verbose=verbose)
        assert "\x1b[" not in plain
        assert "\x1b[" in coloured
        assert strip_ansi(coloured) == plain


def test_colour_marks_outcomes_and_cargos_diagnostics():
    coloured = render(LIVE, COLOUR)
    assert "\x1b[32mpatched\x1b[0m" in coloured
    assert "\x1b[32mapplied\x1b[0m" in coloured
    assert "\x1b[1;31mbuild failed\x1b[0m" in coloured
    assert "\x1b[1;31merror[E0277]\x1b[0m" in coloured
    assert re.search(r"\x1b\[1;34m *-->\x1b\[0m|\x1b\[1;34m-->\x1b\[0m", coloured)
    assert "\x1b[33mno process subscribed" in coloured


# --------------------------------------------------------------------------- when to colour


class FakeStream:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_is_on_for_a_terminal_and_off_for_a_pipe():
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert wants_color("auto", terminal, {}) is True
    finally:
        os.close(leader)
        os.close(follower)
    read, write = os.pipe()
    try:
        with open(write, "w", closefd=False) as pipe:
            assert wants_color("auto", pipe, {}) is False
    finally:
        os.close(read)
        os.close(write)


def test_no_color_and_a_dumb_terminal_turn_it_off_and_the_flag_overrides():
    tty = FakeStream(True)
    assert wants_color("auto", tty, {"NO_COLOR": "1"}) is False
    assert wants_color("auto", tty, {"NO_COLOR": ""}) is True  # set but empty: no-color.org says ignore it
    assert wants_color("auto", tty, {"TERM": "dumb"}) is False
    assert wants_color("always", FakeStream(False), {"NO_COLOR": "1"}) is True
    assert wants_color("never", tty, {}) is False


VERDICT_READY = {
    "type": "patch-ready", "id": 9, "time": 1700000000.0, "workspace": "/w", "crate": "game",
    "program": {"name": "game", "scope": "host-debug"}, "lib": "/w/p.so", "report": {},
    "timings": {"rustc_ms": 80.0, "link_ms": 10.0, "verify_ms": 4.0, "analysis_ms": 2.0, "total_ms": 96.0},
    "verdict": "unknown", "verdict_reason": "draw() may be called through a pointer",
    "changes": [
        {"function": "game::frame", "change": "changed", "verdict": "carried", "file": "src/main.rs", "line": 8,
         "new": True},
        {"function": "game::greet", "change": "changed", "verdict": "carried", "new": False},
        {"function": "game::draw", "change": "changed", "verdict": "unknown", "why": "an indirect call in frame",
         "file": "src/draw.rs", "line": 3, "new": True},
    ],
}


def test_a_patch_names_what_it_changed_and_what_may_still_run_old_code():
    lines = render_event(VERDICT_READY, clock=no_clock)
    assert lines[0].startswith(f"{at(VERDICT_READY)} patched frame(), draw() of game (host-debug) in 96 ms")
    assert "analysis 2 ms" in lines[0]
    assert "  may still run old code: draw() (src/draw.rs:3): an indirect call in frame" in lines
    verbose = render_event(VERDICT_READY, verbose=True, clock=no_clock)
    assert "  changed: frame() (src/main.rs:8)" in verbose and not any("greet" in line for line in verbose)


def test_a_restart_required_says_why_and_where():
    event = {
        "type": "restart-required", "id": 10, "time": 1700000000.0, "workspace": "/w", "crate": "game",
        "program": {"name": "game", "scope": "host-debug"},
        "reason": "game::World's layout changed (size 8 → 16 bytes)", "timings": {}, "changes": [
            {"function": "game::frame", "change": "changed", "verdict": "needs-restart", "why": "it uses game::World",
             "file": "src/main.rs", "line": 8, "decisive": True},
            {"function": "game::main", "change": "changed", "verdict": "needs-restart", "why": "not reached"},
        ],
    }
    lines = render_event(event, clock=no_clock)
    assert lines == [
        f"{at(event)} needs a restart: game (host-debug): game::World's layout changed (size 8 → 16 bytes)",
        "  frame() (src/main.rs:8): it uses game::World",
    ]
    assert len(render_event(event, verbose=True, clock=no_clock)) == 3
