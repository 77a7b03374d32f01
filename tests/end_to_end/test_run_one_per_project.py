"""One `thinpatch run` per project, and `thinpatch restart` for a fresh build: a real cargo
project (as a new user makes it, see test_run_new_user), a real `run` under a
pseudo-terminal, a second `run` and `restart` as another terminal would start them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.end_to_end.test_run_new_user import assert_nothing_left, frame_number, new_project, thinpatch
from tests.support.daemon_process import save_like_an_editor
from tests.support.protocol_harness import short_socket_path

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.cargo


class Running(NamedTuple):
    child: pexpect.spawn
    game: Path
    socket_path: Path
    program_pid: int


@pytest.fixture(scope="module")
def running(tmp_path_factory, capture_state_dir):
    """A `thinpatch run` of a fresh project, its program printing frames; Ctrl-C at the end."""
    tmp_path = tmp_path_factory.mktemp("one-run")
    game = new_project(tmp_path)
    socket_path = short_socket_path(tmp_path)
    child = pexpect.spawn(
        sys.executable, ["-m", "daemon", "run", "--socket", str(socket_path)],
        cwd=str(game), env={**os.environ, "TERM": "xterm"}, encoding="utf-8", timeout=90,
    )
    child.logfile_read = open(tmp_path / "terminal.txt", "w")  # what the user saw, for a failure
    try:
        child.expect(r"\[thinpatch\]\S* running game \(host-debug\) \(pid (\d+)\)")
        yield Running(child, game, socket_path, int(child.match.group(1)))
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert_nothing_left(game, socket_path)
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus)


def test_a_second_run_is_refused_naming_the_first_and_the_first_keeps_going(running):
    child = running.child
    child.expect(r"frame (\d+) says v1")
    before = frame_number(child)

    second = thinpatch("run", "--socket", str(running.socket_path), cwd=running.game)
    assert second.returncode == 1, second
    assert f"another thinpatch run (pid {child.pid}) is running this project; stop it first" in second.stderr
    assert "Traceback" not in second.stderr and "building" not in second.stderr

    child.expect(r"frame (\d+) says v1")  # the first one's program runs on, undisturbed
    assert frame_number(child) > before
    assert child.isalive()


def test_restart_rebuilds_and_restarts_the_program(running):
    child, main = running.child, running.game / "src" / "main.rs"
    child.expect(r"frame \d+ says v1")
    pid = running.program_pid

    # While the sources don't compile, a restart is not tried: the program keeps running
    save_like_an_editor(main, main.read_text().replace('"frame {n} says v1")', '"frame {n} says v1"'))
    child.expect(r"build failed\S* \(1 error")
    done = thinpatch("restart", cwd=running.game)
    assert done.returncode == 0, done
    assert f"asked thinpatch run (pid {child.pid}) to rebuild game and restart it" in done.stdout
    child.expect(r"restart requested, but the last build failed: fix the error first; game keeps running")
    child.expect(r"frame (\d+) says v1")
    assert os.path.exists(f"/proc/{pid}")

    # Fixed, then restarted: a new process, its frames counting from the start
    save_like_an_editor(main, main.read_text().replace('"frame {n} says v1"', '"frame {n} says v2")'))
    child.expect(r"frame \d+ says v2")
    done = thinpatch("restart", cwd=running.game)
    assert done.returncode == 0, done
    child.expect(r"restart requested: \S*rebuilding\S* game")
    child.expect(r"building game under capture \(a rebuild was requested\)")
    child.expect(r"restarted game with a fresh build \(pid (\d+)\)")
    restarted = int(child.match.group(1))
    assert restarted != pid
    child.expect(r"frame (\d+) says v2")
    assert frame_number(child) < 20
    assert not os.path.exists(f"/proc/{pid}")  # stopped, and reaped
    assert child.isalive()  # `run` itself goes on
