"""A new user, following the README: `cargo new`, `thinpatch init`, two lines of code,
`thinpatch run` in a terminal, then edits. Everything real: cargo, the daemon `run` starts,
the program under a pseudo-terminal, file saves, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon_process import save_like_an_editor
from tests.support.protocol_harness import short_socket_path

pexpect = pytest.importorskip("pexpect")
pytestmark = pytest.mark.cargo

MAIN_RS = """\
use std::time::Duration;

fn frame(n: u64) -> String {
    format!("frame {n} says v1")
}

fn main() {
    println!("game {} starts", env!("CARGO_PKG_VERSION"));
    thinpatch_client::connect();
    let mut hot_frame = thinpatch_client::HotFn::current(frame);
    for n in 1.. {
        println!("{}", hot_frame.call((n,)));
        std::thread::sleep(Duration::from_millis(100));
    }
}
"""


GREEN, RESET = r"\x1b\[32m", r"\x1b\[0m"
WARNED = r"(?: \(\d+ warnings?\))?"  # the build's warning count, when it has any


def thinpatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def entry_points_reported(game: Path, socket_path: Path) -> None:
    """Until the program's hot entry point reached the daemon (the client sends it on its
    first call, once subscribed): before that, reach can't be judged and verdicts are unknown."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = thinpatch("status", "--json", "--socket", str(socket_path), cwd=game)
        if done.returncode == 0:
            programs = [p for w in json.loads(done.stdout)["workspaces"] for p in w.get("programs", [])]
            if any(p.get("entry_points") for p in programs):
                return
        time.sleep(0.2)
    raise AssertionError("the program never reported its hot entry points")


def frame_number(child) -> int:
    return int(child.match.group(1))


def processes_matching(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout  # -ww: whole lines
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


def assert_nothing_left(game: Path, socket_path: Path) -> None:
    """No program or daemon of this session is running (and none is left to disturb later tests)."""
    deadline = time.monotonic() + 10
    while True:
        left = processes_matching(str(game / "target")) + processes_matching(f"serve --socket {socket_path}")
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for line in left:
        os.kill(int(line.split()[0]), signal.SIGKILL)
    assert not left, left


def new_project(tmp_path: Path) -> Path:
    """`cargo new` (edition 2024), `thinpatch init`, and the two lines in main()."""
    subprocess.run(["cargo", "new", "--bin", "--edition", "2024", "--vcs", "none", "game"], cwd=tmp_path,
                   check=True, capture_output=True)
    game = tmp_path / "game"
    init = thinpatch("init", cwd=game)
    assert init.returncode == 0, init.stderr
    assert "thinpatch_client::connect();" in init.stdout
    (game / "src" / "main.rs").write_text(MAIN_RS)
    return game


def test_from_cargo_new_to_live_patches_with_one_command(tmp_path, capture_state_dir):
    game = new_project(tmp_path)
    main = game / "src" / "main.rs"
    socket_path = short_socket_path(tmp_path)

    child = pexpect.spawn(
        sys.executable, ["-m", "daemon", "run", "--socket", str(socket_path)],
        cwd=str(game), env={**os.environ, "TERM": "xterm"}, encoding="utf-8", timeout=90,
    )
    child.logfile_read = open(tmp_path / "terminal.txt", "w")  # what the user saw, for a failure
    watch = None
    try:
        child.expect(r"\[thinpatch\]\S* running game \(host-debug\) \(pid (\d+)\)")
        pid = int(child.match.group(1))
        # to a file: a pipe nobody reads until the end fills, and the daemon then drops the
        # watcher that stopped reading (its events are what this test checks last)
        watch_log = open(tmp_path / "watch.jsonl", "w")
        watch = subprocess.Popen([sys.executable, "-m", "daemon", "watch", "--json", "--socket", str(socket_path)],
                                 stdout=watch_log, stderr=subprocess.DEVNULL, text=True)
        child.expect(r"frame (\d+) says v1")
        before = frame_number(child)
        entry_points_reported(game, socket_path)  # then a patch's reach can be told

        # 4. an edit shows in the same process, its counter going on
        save_like_an_editor(main, main.read_text().replace("says v1", "says v2"))
        # it names what changed: the hot function, reached from the entry point the program reported
        child.expect(f"{GREEN}patched{RESET} frame\\(\\) in \\d+ ms{WARNED}: game \\(pid (\\d+)\\) runs the new code")
        assert int(child.match.group(1)) == pid  # in colour: this is a terminal
        child.expect(r"frame (\d+) says v2")
        assert frame_number(child) > before

        # 5. a compile error is shown as cargo shows it; the program keeps running; the fix patches
        save_like_an_editor(
            main, main.read_text().replace('format!("frame {n} says v2")', 'format!("frame {n} says v3"')
        )
        child.expect(r"error")
        child.expect(r"build failed\S* \(1 error")
        child.expect(r"frame (\d+) says v2")
        save_like_an_editor(
            main, main.read_text().replace('format!("frame {n} says v3"', 'format!("frame {n} says v3")')
        )
        child.expect(r"patched\S* frame\(\) in \d+ ms")
        child.expect(r"frame (\d+) says v3")
        assert os.path.exists(f"/proc/{pid}")

        # 6. Cargo.toml can't be patched: the program is rebuilt and restarted by itself, but
        # only once the rebuild succeeds. A save that does not build keeps it running.
        manifest = game / "Cargo.toml"
        good = manifest.read_text()
        assert 'version = "0.1.0"' in good
        save_like_an_editor(manifest, good.replace('version = "0.1.0"', 'version = "0.2.0'))
        child.expect(r"rebuild failed\S* after the Cargo.toml change \(.*\); game \(pid (\d+)\) keeps running the last")
        assert int(child.match.group(1)) == pid
        child.expect(r"frame (\d+) says v3")  # still printing, its counter going on
        assert frame_number(child) > before and os.path.exists(f"/proc/{pid}")
        save_like_an_editor(main, main.read_text().replace("says v3", "says v3 still"))  # and still patched
        child.expect(r"patched\S* frame\(\) in \d+ ms" + WARNED + r": game \(pid (\d+)\) runs the new code")
        assert int(child.match.group(1)) == pid
        child.expect(r"rebuild failed\S* after the Cargo.toml change")  # the summary stays the last line
        child.expect(r"frame \d+ says v3 still")
        # The fixed Cargo.toml restarts it once (cargo rewriting Cargo.lock for it is no second reason).
        save_like_an_editor(manifest, good.replace('version = "0.1.0"', 'version = "0.2.0"'))
        child.expect(r"Cargo.toml changed: \S*restarted\S* game \(pid (\d+)\) with a fresh build; its state was lost")
        restarted = int(child.match.group(1))
        assert restarted != pid and not os.path.exists(f"/proc/{pid}")
        # The new process may print its first frame before that line: a low frame number is it.
        child.expect(r"frame (\d+) says v3")
        assert frame_number(child) < 20

        # A program that dies is said so, and starts again on the next save: built afresh from
        # the sources as saved (tests/end_to_end/test_run_relaunch.py: outside the hot function too).
        os.kill(restarted, signal.SIGKILL)
        child.expect(r"game was killed by SIGKILL; it starts again on the next save that builds, from the current")
        save_like_an_editor(main, main.read_text().replace("says v3", "says v4"))
        child.expect(r"game had stopped: \S*rebuilt\S* it from the current sources and started it again \(pid (\d+)\)")
        again = int(child.match.group(1))
        child.expect(r"frame \d+ says v4")
        entry_points_reported(game, socket_path)  # a save before then is honestly "may still run old code"
        # and the next save patches it
        save_like_an_editor(main, main.read_text().replace("says v4", "says v5"))
        child.expect(r"patched\S* frame\(\) in \d+ ms" + WARNED + r": game \(pid (\d+)\) runs the new code")
        assert int(child.match.group(1)) == again
        child.expect(r"frame \d+ says v5")

        # A process that can't load the patch reports it: a second copy of the program starts
        # after the latest patch library was deleted; the daemon replays that patch to it.
        status = json.loads(thinpatch("status", "--json", "--socket", str(socket_path), cwd=game).stdout)
        [program] = [p for w in status["workspaces"] if w["workspace"] == str(game) for p in w["programs"]]
        latest = Path(program["last_patch"]["lib"])
        latest.unlink()
        second = subprocess.Popen(
            [str(game / "target" / "debug" / "game")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "THINPATCH_SOCKET": str(socket_path)},
        )
        time.sleep(2)
        second.kill()
        second.wait()

        # 7. Ctrl-C stops everything run started
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
        child.logfile_read.close()
        if watch is not None:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=30)
            watch_log.close()
    watched = (tmp_path / "watch.jsonl").read_text()
    reports = [e for e in map(json.loads, watched.splitlines()) if e["type"] == "patch-result"]
    assert any(r["applied"] and r["pid"] == pid for r in reports), reports
    assert any(r["applied"] and r["pid"] == again for r in reports), (
        [(r["id"], r["pid"], r["applied"], r.get("message")) for r in reports], pid, again)
    [failed] = [r for r in reports if r["pid"] == second.pid]
    assert failed["applied"] is False and str(latest) in failed["message"], failed
    assert_nothing_left(game, socket_path)
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus)
    terminal = (tmp_path / "terminal.txt").read_text()
    assert terminal.count("with a fresh build; its state was lost") == 1, terminal
    assert "internal error" not in terminal
    assert "game 0.2.0 starts" in terminal  # the restarted program is the fixed Cargo.toml's build


def test_a_killed_run_leaves_no_program_and_no_daemon(tmp_path, capture_state_dir):
    """Even SIGKILL, which `run` can't catch: what it started gets SIGTERM from the kernel."""
    game = new_project(tmp_path)
    socket_path = short_socket_path(tmp_path)
    run = subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--socket", str(socket_path)],
        cwd=game,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        for line in run.stdout:
            if "says v1" in line:
                break
            assert time.monotonic() < deadline
        assert processes_matching(f"serve --socket {socket_path}"), "run started no daemon"
        run.kill()
        run.wait(timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
    assert_nothing_left(game, socket_path)
