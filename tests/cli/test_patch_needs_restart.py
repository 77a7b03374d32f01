"""`thinpatch patch` on a save only a restart runs: no library, and it says why."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daemon.cli.capture_run import run_capture

pytestmark = pytest.mark.cargo


def test_a_save_only_a_restart_runs_prints_no_library(fixture_copy, capture_state_dir) -> None:
    workspace = fixture_copy("single_bin")
    assert run_capture(workspace).exit_code == 0
    main = workspace / "src" / "main.rs"
    main.write_text(main.read_text().replace("AtomicUsize::new(0)", "AtomicUsize::new(7)"))
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "patch", "--workspace", str(workspace)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 1, out.stderr
    assert out.stdout == ""  # no library path: nothing was linked
    assert "no patch of single_bin" in out.stderr and "needs a restart" in out.stderr
    assert "was built" not in out.stderr
