"""A second user (nobody) who can write into the project's ``target/debug/deps`` swaps the
captured binary for a program of their own carrying the same GNU build ID. `thinpatch run`
must not start it, and must name the directory and the fix."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from daemon.binary.build_id import read_build_id
from tests.support.other_user import nobody_ids, run_as_nobody
from tests.support.protocol_harness import short_socket_path

pytestmark = [
    pytest.mark.cargo,
    pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root"),
]

# The attacker's program: it leaves a mark when it runs.
EVIL_C = '#include <stdio.h>\nint main(void) { FILE *f = fopen("%s", "w"); if (f) fputs("ran", f); return 0; }\n'

# As nobody: put the attacker's program in place of the binary (a rename, as `cargo` would).
SWAP = r"""
import os, shutil, sys
evil, binary = sys.argv[1], sys.argv[2]
planted = binary + ".planted"
shutil.copyfile(evil, planted)
os.chmod(planted, 0o755)
os.rename(planted, binary)
"""


@pytest.fixture
def project(capture_state_dir, tmp_path, monkeypatch):
    """A captured copy of single_bin in a directory of its own under /tmp."""
    from daemon.cli.capture_run import run_capture
    from tests.conftest import copy_fixture

    monkeypatch.delenv("CARGO_TARGET_DIR", raising=False)  # the binary lives in the project's target/

    parent = Path(tempfile.mkdtemp(prefix="tp-binary-"))
    os.chmod(parent, 0o755)
    workspace = copy_fixture("single_bin", parent)
    assert run_capture(workspace).exit_code == 0
    yield workspace
    shutil.rmtree(parent, ignore_errors=True)


def captured_binary(workspace: Path) -> Path:
    deps = workspace / "target" / "debug" / "deps"
    found = [p for p in deps.iterdir() if p.name.startswith("single_bin-") and "." not in p.name]
    assert len(found) == 1, found
    return found[0]


def evil_program_with_build_id(directory: Path, build_id: str, marker: Path) -> Path:
    source = directory / "evil.c"
    source.write_text(EVIL_C % marker)
    program = directory / "evil"
    subprocess.run(["cc", "-o", str(program), str(source), f"-Wl,--build-id=0x{build_id}"], check=True)
    return program


def test_a_binary_another_user_swapped_with_the_same_build_id_is_not_run(project, tmp_path):
    binary = captured_binary(project)
    build_id = read_build_id(binary)
    assert build_id
    shared = Path(tempfile.mkdtemp(prefix="tp-evil-"))
    os.chmod(shared, 0o1777)
    marker = shared / "ran"
    evil = evil_program_with_build_id(shared, build_id, marker)
    os.chmod(evil, 0o755)

    deps = binary.parent
    for directory in (project, project / "target", project / "target" / "debug"):
        os.chmod(directory, 0o755)  # reachable by others, as a home directory often is
    os.chmod(deps, 0o777)  # the mistake: others may write where cargo puts the binary
    run_as_nobody(SWAP, str(evil), str(binary))
    assert os.stat(binary).st_uid == nobody_ids()[0]
    assert read_build_id(binary) == build_id  # the build ID alone can't tell

    os.chmod(tmp_path, 0o700)
    env = {k: v for k, v in os.environ.items() if k not in ("THINPATCH_SOCKET", "CARGO_TARGET_DIR")}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    socket_path = short_socket_path(tmp_path)
    try:  # a `run` that started the program keeps running: the timeout ends it
        done = subprocess.run(
            [sys.executable, "-m", "daemon", "run", "--socket", str(socket_path)],
            cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        done = subprocess.CompletedProcess(exc.cmd, -9, "", str(exc.stderr))
    finally:
        ran = marker.exists()
        shutil.rmtree(shared, ignore_errors=True)
    assert not ran, "the attacker's program ran"
    assert done.returncode != 0, done
    assert f"refusing to run {binary}" in done.stderr, done.stderr
    assert f"chmod go-w {shlex.quote(str(deps))}" in done.stderr, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
