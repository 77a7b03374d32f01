"""`thinpatch run` starts each save's capture build beside its patch build, held before any
compile: a save a patch carries calls it off and leaves the program's binary, the capture and
the terminal as they were; a save that needs a restart uses it, with no second build. A real
project, a real `run` in a pseudo-terminal, and cargo's own invocations logged."""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest

from capture import store
from tests.end_to_end.test_run_new_user import assert_nothing_left, entry_points_reported, new_project
from tests.end_to_end.test_run_relaunch import stop_run
from tests.end_to_end.test_run_verdicts import GAME_RS, until
from tests.support.daemon_process import save_like_an_editor
from tests.support.protocol_harness import short_socket_path

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.cargo


def logging_cargo(directory: Path, log: Path) -> Path:
    """A `cargo` first on PATH that notes each build it is asked for, then is the real one."""
    real = shutil.which("cargo")
    assert real is not None
    directory.mkdir()
    wrapper = directory / "cargo"
    wrapper.write_text(f'#!/bin/sh\ncase "$1" in build) echo build >> \'{log}\';; esac\nexec \'{real}\' "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return directory


def builds(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def terminal_length(child, tmp_path: Path) -> int:
    child.logfile_read.flush()
    return len((tmp_path / "terminal.txt").read_text())


def terminal_since(child, tmp_path: Path, start: int) -> str:
    child.logfile_read.flush()
    return (tmp_path / "terminal.txt").read_text()[start:]


def program_state(game: Path) -> tuple:
    captures = store.load_captures(game / "target" / store.CAPTURE_DIRNAME, "host-debug")
    (link,) = captures.links.values()
    binary = os.stat(link.output)
    return (sorted((k.label, r.recorded_at) for k, r in captures.rustc.items()), link.recorded_at,
            binary.st_ino, binary.st_mtime_ns)


@pytest.mark.parametrize("early", [True, False], ids=["always", "never"])
def test_a_carried_save_calls_its_build_off_and_a_restart_uses_it(tmp_path: Path, capture_state_dir, early) -> None:
    game = new_project(tmp_path)
    main = game / "src" / "main.rs"
    main.write_text(GAME_RS)
    log = tmp_path / "cargo-builds.txt"
    path = f"{logging_cargo(tmp_path / 'bin', log)}{os.pathsep}{os.environ['PATH']}"
    socket_path = short_socket_path(tmp_path)
    argv = ["-m", "daemon", "run", "--socket", str(socket_path), f"--early-build={'always' if early else 'never'}"]
    child = pexpect.spawn(sys.executable, argv, cwd=str(game), env={**os.environ, "TERM": "xterm", "PATH": path},
                          encoding="utf-8", timeout=90)
    child.logfile_read = open(tmp_path / "terminal.txt", "w")
    try:
        child.expect(r"running game \(host-debug\) \(pid (\d+)\)")
        pid = int(child.match.group(1))
        until(child, "v1")
        entry_points_reported(game, socket_path)
        before, built = program_state(game), builds(log)
        seen = terminal_length(child, tmp_path)

        # A save a patch carries: the held build (if any) is called off and shows nothing.
        save_like_an_editor(main, main.read_text().replace("says v1", "says v2"))
        child.expect(r"patched\S* frame\(\) in \d+ ms[^:]*: game \(pid (\d+)\) runs the new code")
        assert int(child.match.group(1)) == pid
        until(child, "v2")
        shown = terminal_since(child, tmp_path, seen)
        assert builds(log) == built + (1 if early else 0)
        assert program_state(game) == before  # the binary the program runs, and its capture, as they were
        assert "Compiling" not in shown and "error" not in shown, shown

        # A save that needs a restart: one build, shown once, then the restart.
        built = builds(log)
        save_like_an_editor(main, main.read_text().replace('"banner one"', '"banner two"'))
        child.expect(r"needs a restart\S*: banner\(\) is not reached")
        child.expect(r"Compiling\S* game")
        child.expect(r"restarted\S* game \(pid (\d+)\)")
        assert int(child.match.group(1)) != pid
        until(child, "v2", "banner two")
        assert builds(log) == built + 1
    finally:
        stop_run(child, game, socket_path)
    terminal = (tmp_path / "terminal.txt").read_text()
    assert "internal error" not in terminal and "called off" not in terminal
    assert len(re.findall(r"Compiling\S* game", terminal)) == 2, terminal  # the first build and the restart's
    assert_nothing_left(game, socket_path)
