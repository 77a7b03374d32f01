"""The per-project `thinpatch run` lock: held while a run lives, free after it ends however it
ends, never followed through a link, and read by `thinpatch restart`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from daemon.cli import run_lock
from tests.support.other_user import nobody_ids


def hold_in_child(root, *, crash: bool = False) -> subprocess.Popen:
    """Another process holding the lock (as another `run` would); it says "held" once it does."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from daemon.cli import run_lock
        run_lock.hold(Path({str(root)!r}))
        print("held", flush=True)
        if {crash}:
            os._exit(9)
        sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


@pytest.mark.parametrize("text,pid", [("1234\n", 1234), ("  77 ", 77), ("", None), ("abc", None), ("-5", None),
                                       ("1", None), ("١٢٣", None), ("99999999999", None)])
def test_parse_pid(text, pid):
    assert run_lock.parse_pid(text) == pid


def test_the_refusal_names_the_pid_and_what_to_do():
    message = run_lock.refusal(4321)
    assert "another thinpatch run (pid 4321) is running this project" in message
    assert "stop it first" in message and "thinpatch restart" in message
    assert "(pid" not in run_lock.refusal(None)


def test_held_lock_names_its_holder_and_refuses_a_second(tmp_path):
    root = tmp_path / "target" / "thinpatch"
    assert run_lock.holder(root) is None  # no file: no run
    child = hold_in_child(root)
    try:
        assert run_lock.holder(root) == child.pid
        with pytest.raises(run_lock.RunActive) as refused:
            run_lock.hold(root)
        assert refused.value.pid == child.pid
        info = os.stat(run_lock.lock_path(root))
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    finally:
        child.communicate("")
    assert run_lock.holder(root) is None  # it ended: the file stays, the lock is gone


def test_a_crashed_holder_leaves_a_file_that_blocks_nobody(tmp_path):
    root = tmp_path / "thinpatch"
    child = hold_in_child(root, crash=True)
    child.wait()
    assert run_lock.parse_pid(run_lock.lock_path(root).read_text()) == child.pid
    assert run_lock.holder(root) is None
    fd = run_lock.hold(root)
    try:
        assert run_lock.lock_path(root).read_text() == f"{os.getpid()}\n"  # the stale pid is replaced
    finally:
        os.close(fd)


def test_a_symbolic_link_is_not_followed(tmp_path):
    root = tmp_path / "thinpatch"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("keep\n")
    run_lock.lock_path(root).symlink_to(elsewhere)
    with pytest.raises(run_lock.RunLockError, match="symbolic link"):
        run_lock.hold(root)
    with pytest.raises(run_lock.RunLockError, match="symbolic link"):
        run_lock.holder(root)
    assert elsewhere.read_text() == "keep\n"


def test_a_directory_in_its_place_is_refused(tmp_path):
    root = tmp_path / "thinpatch"
    run_lock.lock_path(root).mkdir(parents=True)
    with pytest.raises(run_lock.RunLockError):
        run_lock.hold(root)


def test_a_capture_root_of_another_user_is_refused(tmp_path):
    """The lock is trusted as every file thinpatch uses is: the directory it sits in must be
    yours (a shared CARGO_TARGET_DIR that another user made first is not)."""
    root = tmp_path / "thinpatch"
    root.mkdir(mode=0o755)
    os.chown(root, *nobody_ids())
    with pytest.raises(run_lock.RunLockError, match=r"can't be trusted: .*belongs to uid"):
        run_lock.hold(root)
    assert list(root.iterdir()) == []  # refused before anything was written there
    run_lock.lock_path(root).write_text("1\n")  # as a `run` before this check would have left it
    with pytest.raises(run_lock.RunLockError, match=r"can't be trusted"):
        run_lock.holder(root)


def test_restart_without_a_run_says_so(tmp_path):
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n')
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.rs").write_text("fn main() {}\n")
    out = subprocess.run([sys.executable, "-m", "daemon", "restart"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1, out
    assert f"no thinpatch run is active in {tmp_path}" in out.stderr and "thinpatch run" in out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
