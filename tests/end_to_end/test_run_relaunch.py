"""`thinpatch run` starts only a binary built from the current sources. A real cargo project
(as a new user makes it, see test_run_new_user), a real `run` under a pseudo-terminal, and
saves to code outside the hot function, which no patch reaches: only a fresh build shows them."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.end_to_end.test_run_new_user import assert_nothing_left, new_project, thinpatch
from tests.support.daemon_process import save_like_an_editor
from tests.support.protocol_harness import short_socket_path

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.cargo

# The banner is printed by main before its loop: a patch never runs it again.
MAIN_RS = """\
use std::time::Duration;

fn frame(n: u64) -> String {
    format!("frame {n} says v1")
}

fn main() {
    println!("banner: first build");
    thinpatch_client::connect();
    let mut hot_frame = thinpatch_client::HotFn::current(frame);
    for n in 1.. {
        println!("{}", hot_frame.call((n,)));
        std::thread::sleep(Duration::from_millis(100));
    }
}
"""
FIRST, EDITED = "banner: first build", "banner: saved later"


def game_project(tmp_path: Path) -> Path:
    game = new_project(tmp_path)
    (game / "src" / "main.rs").write_text(MAIN_RS)
    return game


def start_run(game: Path, socket_path: Path, log: Path):
    child = pexpect.spawn(
        sys.executable, ["-m", "daemon", "run", "--socket", str(socket_path)],
        cwd=str(game), env={**os.environ, "TERM": "xterm"}, encoding="utf-8", timeout=45,
    )
    child.logfile_read = open(log, "w")  # what the user saw, for a failure
    return child


def stop_run(child, game: Path, socket_path: Path) -> None:
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert_nothing_left(game, socket_path)
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus)


def test_run_started_after_an_edit_since_the_capture_runs_the_edited_code_from_its_first_line(
    tmp_path, capture_state_dir
):
    game = game_project(tmp_path)
    main = game / "src" / "main.rs"
    captured = thinpatch("capture", cwd=game)
    assert captured.returncode == 0, captured.stderr
    save_like_an_editor(main, MAIN_RS.replace(FIRST, EDITED))  # outside the hot function

    socket_path = short_socket_path(tmp_path)
    child = start_run(game, socket_path, tmp_path / "terminal.txt")
    try:
        assert child.expect([re.escape(EDITED), re.escape(FIRST)]) == 0, "the capture's old binary was started"
        child.expect(r"frame \d+ says v1")
        stop_run(child, game, socket_path)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    terminal = (tmp_path / "terminal.txt").read_text()
    assert "building game under capture (src/main.rs changed since the capture)" in terminal
    assert terminal.index("src/main.rs changed since the capture") < terminal.index(EDITED)
    assert FIRST not in terminal
