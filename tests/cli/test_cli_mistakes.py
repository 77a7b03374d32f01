"""Every mistake on the command line ends in a one- or two-line message naming the fix:
exit 2 for usage errors, 1 for everything else, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon_process import DaemonProcess


def thinpatch(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def assert_message(out: subprocess.CompletedProcess, code: int, *needles: str, stdout: str = "") -> None:
    assert out.returncode == code, out
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in out.stderr, out.stderr
    assert 1 <= len(out.stderr.strip().splitlines()) <= 2, out.stderr
    assert out.stdout == stdout


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def no_daemon(tmp_path):
    os.chmod(tmp_path, 0o700)
    env = dict(
        os.environ,
        THINPATCH_SOCKET=str(tmp_path / "none" / "thinpatch.sock"),
        THINPATCH_STATE_DIR=str(tmp_path / "state"),
    )
    return env


@pytest.mark.parametrize(
    "typo,meant", [("stauts", "status"), ("serv", "serve"), ("captur", "capture"), ("hlep", "help")]
)
def test_a_typo_gets_did_you_mean(typo, meant):
    assert_message(
        thinpatch(typo), 2, f"unknown command {typo!r}", f"Did you mean `thinpatch {meant}`?", "thinpatch help"
    )


def test_an_unknown_word_gets_the_list_hint():
    assert_message(thinpatch("frobnicate"), 2, "unknown command 'frobnicate'", "`thinpatch help`")


def test_help_lists_the_commands_and_help_for_one_command():
    out = thinpatch("help")
    assert out.returncode == 0 and "capture" in out.stdout and "serve" in out.stdout
    one = thinpatch("help", "watch")
    assert one.returncode == 0 and one.stdout.startswith("usage: thinpatch watch")
    assert_message(thinpatch("help", "nope"), 2, "unknown command 'nope'")


def test_an_unknown_option_names_the_command_and_its_help():
    assert_message(
        thinpatch("status", "--frob"), 2, "thinpatch status: unrecognized arguments: --frob", "thinpatch status --help"
    )
    assert_message(thinpatch("--frob"), 2, "unrecognized arguments: --frob", "thinpatch help")
    assert_message(thinpatch("serve", "--on-busy", "never"), 2, "invalid choice", "thinpatch serve --help")
    assert_message(
        thinpatch("serve", "--debounce-ms", "-5"),
        2,
        "--debounce-ms: must be 1 or more, not -5",
        "thinpatch serve --help",
    )
    assert_message(thinpatch("serve", "--keep", "0"), 2, "--keep: must be 1 or more, not 0", "thinpatch serve --help")
    assert_message(
        thinpatch("serve", "--debounce-ms", "abc"), 2, "expected a whole number, not 'abc'", "thinpatch serve --help"
    )


def test_stop_without_a_daemon_has_nothing_to_do(no_daemon):
    out = thinpatch("stop", env=no_daemon)
    assert out.returncode == 0 and "not running" in out.stderr and "There is nothing to stop." in out.stderr


@pytest.mark.parametrize("command", [["status"], ["watch"], ["rebuild"]])
def test_no_daemon_says_how_to_start_one(no_daemon, command):
    out = thinpatch(*command, env=no_daemon)
    assert out.returncode == 1, out
    assert "not running" in out.stderr and "thinpatch serve" in out.stderr and "Traceback" not in out.stderr


def test_status_json_without_a_daemon_still_prints_json(no_daemon):
    out = thinpatch("status", "--json", env=no_daemon)
    assert out.returncode == 1
    reply = json.loads(out.stdout)
    assert reply["running"] is False and "thinpatch serve" in reply["error"]


def test_serve_on_a_socket_path_that_cannot_exist(no_daemon):
    assert_message(
        thinpatch("serve", "--socket", "/proc/nope/x.sock", env=no_daemon),
        2,
        "cannot create the socket directory /proc/nope",
        "--socket",
    )


def test_serve_a_workspace_that_does_not_exist(no_daemon, tmp_path):
    assert_message(
        thinpatch("serve", "--workspace", str(tmp_path / "gone"), env=no_daemon), 2, "is not a directory", "Cargo.toml"
    )


def test_patch_json_into_a_closed_pipe_exits_quietly(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "patch", "--json", "--workspace", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "s")),
    )
    proc.stdout.close()  # like `| head` that has read enough
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert "no capture found" in err  # the reason is on stderr, written before stdout


def test_rebuild_of_an_unknown_crate(served):
    daemon, ws, _root, env = served
    out = thinpatch("rebuild", "--workspace", str(ws), "--crate", "nope", env=env)
    assert_message(out, 1, "crate 'nope' is not captured", "captured: app.bin")
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("crate", ["../../etc", "/etc/passwd", "x; touch y"])
def test_rebuild_of_a_path_instead_of_a_crate(served, crate):
    _daemon, ws, _root, env = served
    assert_message(
        thinpatch("rebuild", "--workspace", str(ws), "--crate", crate, env=env), 2, "is not a crate name", "--crate"
    )


def test_serve_a_workspace_without_a_capture_says_so(no_daemon, tmp_path):
    ws = tmp_path / "uncaptured"
    ws.mkdir()
    (ws / "Cargo.toml").write_text('[package]\nname = "x"\n')
    daemon = DaemonProcess(private_dir(tmp_path / "d") / "thinpatch.sock", [ws], env=no_daemon)
    try:
        assert "no capture found" in daemon.log() or (time.sleep(1) or "no capture found" in daemon.log())
        assert "thinpatch capture" in daemon.log()
    finally:
        daemon.terminate()


def test_serve_with_nothing_captured_says_so(no_daemon, tmp_path):
    daemon = DaemonProcess(private_dir(tmp_path / "d") / "thinpatch.sock", [], env=no_daemon)
    try:
        assert "no captured workspace yet" in daemon.log()
    finally:
        daemon.terminate()
