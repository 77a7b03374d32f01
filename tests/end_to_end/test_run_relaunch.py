"""`thinpatch run` starts only a binary built from the current sources: when it starts, and
when it starts a program that stopped again. A real cargo project (as a new user makes it, see
test_run_new_user), a real `run` under a pseudo-terminal, and saves to code outside the hot
function, which no patch reaches: only a fresh build shows them."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.end_to_end.test_run_new_user import assert_nothing_left, frame_number, new_project, thinpatch
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
UNLINKABLE = '#[link(name = "thinpatch_no_such_library")]\nunsafe extern "C" {\n    fn no_such_function();\n}\n\n'


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


def test_a_program_that_was_killed_starts_again_built_from_the_saved_code(tmp_path, capture_state_dir):
    game = game_project(tmp_path)
    main = game / "src" / "main.rs"
    socket_path = short_socket_path(tmp_path)
    child = start_run(game, socket_path, tmp_path / "terminal.txt")
    try:
        child.expect(r"running game \(host-debug\) \(pid (\d+)\)")
        pid = int(child.match.group(1))
        child.expect(r"frame \d+ says v1")

        os.kill(pid, signal.SIGKILL)
        child.expect(r"game was killed by SIGKILL; it starts again on the next save")
        # A save that does not compile starts nothing: the program stays stopped.
        broken = MAIN_RS.replace(f'println!("{FIRST}");', f'println!("{EDITED}")')
        save_like_an_editor(main, broken)
        child.expect(r"build failed\S* \(1 error at src/main.rs:\d+\); game ")
        assert not re.search(r"frame \d+", child.before)

        # A save the daemon can patch but cargo can't link (a patch takes the captured link
        # line, which asks for no such library): the fresh build fails, says so, and the program
        # stays stopped.
        unlinkable = MAIN_RS.replace("fn main() {", UNLINKABLE + "fn main() {")
        save_like_an_editor(main, unlinkable)
        child.expect(r"rebuild failed\S* \(the build failed; cargo's output is above\); game stays stopped until a "
                     r"save builds. Fix it and save again")
        assert not re.search(r"frame \d+", child.before)

        # Its fix changes only main's banner, which no patch reaches: the program that starts
        # must be a fresh build of the sources as saved.
        save_like_an_editor(main, MAIN_RS.replace(FIRST, EDITED))
        assert child.expect([re.escape(EDITED), re.escape(FIRST)]) == 0, "the first build's binary was started"
        child.expect(r"frame (\d+) says v1")
        assert frame_number(child) < 20  # a new process, counting from the start
        stop_run(child, game, socket_path)
    finally:
        child.close(force=True)
        child.logfile_read.close()
    terminal = (tmp_path / "terminal.txt").read_text()
    assert "game was killed by SIGKILL; it starts again on the next save that builds, from the current sources" in (
        terminal
    )
    assert re.search(r"build failed\S* \(1 error at src/main.rs:\d+\); game starts again once a save builds", terminal)
    builds = list(re.finditer(r"building game under capture \(([^)]*)\)", terminal))
    assert [b.group(1) for b in builds[:2]] == [
        "no capture of this program yet",
        "src/main.rs changed since the capture; game starts again once it builds",  # the unlinkable save
    ]
    assert builds[-1].group(1).endswith("; game starts again once it builds")
    assert builds[-1].start() < terminal.rindex(EDITED)  # the banner, after the error that quoted it
    [again] = re.findall(r"game had stopped: \S*rebuilt\S* it from the current sources and started it again "
                         r"\(pid (\d+)\); its state was lost", terminal)
    assert int(again) != pid
    assert "internal error" not in terminal and "Traceback" not in terminal


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
