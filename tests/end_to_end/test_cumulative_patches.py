"""Cumulative patches under subsecond's rules, in ONE live host whose counter never resets.

The host (tests/fixtures/livehost) replaces its whole jump table with each patch and looks
up only its hot entry point, as subsecond does. So every patch must carry every edit made
since the capture: a later app-only patch that forgot the library edit would bring the old
library code back. A real daemon watches the fixture and the host applies its patch-ready
events; the tests run in order and build on each other's edits.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import captured_fixture_copy
from tests.support.daemon_process import save_like_an_editor
from tests.support.live_host import LiveHost

pytestmark = pytest.mark.cargo

APP = "app/src/main.rs"
LIB = "counterlib/src/lib.rs"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, capture_state_dir) -> Path:
    return captured_fixture_copy("livehost", tmp_path_factory.mktemp("cumulative"))


class Ticker:
    """The live host, subscribed to the daemon; every tick must be the previous one plus one."""

    def __init__(self, host: LiveHost):
        self.host = host
        self.last = int(host.tick()["counter"])

    def tick(self) -> dict[str, str]:
        tick = self.host.tick()
        assert int(tick["counter"]) == self.last + 1, ("the host's counter was reset", tick)
        self.last += 1
        return tick

    def until(self, predicate, timeout: float = 120.0) -> dict[str, str]:
        """Tick until the patched code shows (patches arrive asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            tick = self.tick()
            if predicate(tick):
                return tick
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw the patched code; last tick {tick}; host said:\n"
                                     + "\n".join(self.host.transcript[-15:]))
            time.sleep(0.25)


@pytest.fixture(scope="module")
def ticker(host):
    return Ticker(host)


def edit(workspace, rel: str, old: str, new: str) -> None:
    path = workspace / rel
    text = path.read_text()
    assert old in text, (old, rel)
    save_like_an_editor(path, text.replace(old, new, 1))


def test_1_a_library_edit_shows(workspace, ticker):
    assert ticker.tick()["lib"].startswith("lib v1 ")
    edit(workspace, LIB, 'format!("lib v1 ticks={}", n)', 'format!("lib ONE ticks={}", n)')
    ticker.until(lambda t: t["lib"].startswith("lib ONE "))


def test_2_a_later_app_only_edit_keeps_the_library_edit(workspace, ticker):
    edit(workspace, APP, '"app v1 #{} calls={}"', '"app TWO #{} calls={}"')
    after = ticker.until(lambda t: t["app"].startswith("app TWO "))
    assert after["lib"].startswith("lib ONE "), after
    # the library's pub static kept its running value through every patch
    assert int(after["lib"].rsplit("ticks=", 1)[1]) == ticker.last


def test_3_two_crates_saved_at_once_both_show(workspace, ticker):
    edit(workspace, LIB, 'format!("lib ONE ticks={}", n)', 'format!("lib THREE ticks={}", n)')
    edit(workspace, APP, '"app TWO #{} calls={}"', '"app THREE #{} calls={}"')
    after = ticker.until(lambda t: t["app"].startswith("app THREE ") and t["lib"].startswith("lib THREE "))
    assert after["lib"].startswith("lib THREE ") and after["app"].startswith("app THREE ")


def test_4_an_app_edit_uses_a_function_added_by_an_earlier_library_patch(workspace, ticker):
    edit(
        workspace,
        LIB,
        "pub mod extras {",
        'pub fn added_later(n: u64) -> String {\n    format!("added{}", n % 1)\n}\n\npub mod extras {',
    )
    edit(workspace, LIB, 'format!("lib THREE ticks={}", n)', 'format!("lib FOUR ticks={}", n)')
    ticker.until(lambda t: t["lib"].startswith("lib FOUR "))
    # the running program has no `added_later`: the app compiles against the patched
    # library's metadata, and the patch carries the library's new code
    edit(workspace, APP, '"app THREE #{} calls={}"', '"app {} #{} calls={}", counterlib::added_later(n)')
    after = ticker.until(lambda t: t["app"].startswith("app added0 #"))
    assert after["lib"].startswith("lib FOUR "), after


def test_5_deleting_the_session_cache_mid_session_still_gives_new_code(workspace, ticker):
    # dlopen hands back the library it already loaded for a path it has seen: a restarted
    # patch count must not reuse a name this process loaded.
    shutil.rmtree(workspace / "target" / "thinpatch" / "sessions")
    edit(workspace, APP, '"app {} #{} calls={}"', '"app FIVE {} #{} calls={}"')
    after = ticker.until(lambda t: t["app"].startswith("app FIVE added0 #"))
    assert after["lib"].startswith("lib FOUR "), after
    shutil.rmtree(workspace / "target" / "thinpatch" / "sessions")
    edit(workspace, APP, '"app FIVE {} #{} calls={}"', '"app SIX {} #{} calls={}"')
    ticker.until(lambda t: t["app"].startswith("app SIX added0 #"))


def test_6_a_backtrace_taken_in_patched_code_names_the_patched_function_and_line(workspace, ticker):
    # Backtraces and panics in patched code name the patched function, with its path, and its
    # file and line: the patch library's "limited" debug info (the capture's is full) keeps
    # function paths and line tables.
    edit(
        workspace,
        APP,
        "    // APP-EDIT\n",
        "    // APP-EDIT\n"
        "    let trace = std::backtrace::Backtrace::force_capture().to_string();\n"
        "    let lines: Vec<&str> = trace.lines().collect();\n"
        '    let at = lines.iter().position(|l| l.trim_end().ends_with("::greeting"));\n'
        "    let located = at.and_then(|i| lines.get(i + 1)).map(|l| l.trim().to_string()).unwrap_or_default();\n"
        "    let located = located.replace(' ', \"_\");\n",
    )
    edit(
        workspace,
        APP,
        '"app SIX {} #{} calls={}", counterlib::added_later(n), n, calls)',
        '"app SEVEN {} #{} calls={} bt={}", counterlib::added_later(n), n, calls, located)',
    )
    after = ticker.until(lambda t: t["app"].startswith("app SEVEN "))
    located = after["app"].rsplit("bt=", 1)[1]
    source_line = next(
        i + 1 for i, text in enumerate((workspace / APP).read_text().splitlines()) if "force_capture()" in text
    )
    assert located.startswith("at_") and f"main.rs:{source_line}:" in located, after
