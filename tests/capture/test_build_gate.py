"""The gate a held build's rustc shims wait at: go, stop, and a holder that is gone."""

from __future__ import annotations

import os
import subprocess

import pytest

from capture.build_gate import ENV_GATE, GateHolder, wait_at_gate
from capture.rustc_shim import parse_invocation
from tests.capture.test_capture_passthrough import clean_env, real_rustc, shim


def test_go_lets_every_compile_through_even_after_the_holder_closed() -> None:
    holder = GateHolder()
    holder.go()
    value = holder.env()[ENV_GATE]
    assert wait_at_gate(value) and wait_at_gate(value)  # the byte stays for every compile
    read_fd, holder.read_fd = holder.read_fd, -1  # as cargo's copy of it, still open
    holder.close()
    assert wait_at_gate(str(read_fd))
    os.close(read_fd)


def test_stop_and_a_holder_that_is_gone_stop_every_compile() -> None:
    stopped = GateHolder()
    stopped.stop()
    stopped.go()  # decided already: no change
    assert not wait_at_gate(stopped.env()[ENV_GATE])
    gone = GateHolder()
    read_fd, gone.read_fd = gone.read_fd, -1
    gone.close()  # as if `thinpatch run` died before deciding
    assert not wait_at_gate(str(read_fd))
    os.close(read_fd)
    stopped.close()


@pytest.mark.parametrize("value", ["", "x", "999999", "3,4"])
def test_a_gate_that_cannot_be_read_never_lets_a_compile_through(value: str) -> None:
    assert not wait_at_gate(value)


def test_only_compiles_are_held() -> None:
    """The shim holds what is not a probe (capture.rustc_args' one rule for probes)."""

    def held(args: list[str]) -> bool:
        return not parse_invocation(args).is_probe

    assert held(["--crate-name", "app", "--edition=2021", "src/main.rs"])
    assert held(["--crate-name=app", "src/main.rs"])
    assert not held(["-vV"])
    # cargo's target-info probe names a crate, but must answer at once
    assert not held(["-", "--crate-name", "___", "--print=file-names", "--crate-type", "bin"])


@pytest.mark.cargo
def test_the_shim_answers_probes_while_its_build_is_undecided(tmp_path) -> None:
    holder = GateHolder()
    env = clean_env(**holder.env(), THINPATCH_CAPTURE_ROOT=str(tmp_path / "captures"))
    try:
        done = subprocess.run(
            [shim("thinpatch-rustc"), real_rustc(), "-vV"], env=env, capture_output=True, text=True,
            pass_fds=(holder.read_fd,), timeout=60,
        )
    finally:
        holder.close()
    assert done.returncode == 0 and done.stdout.startswith("rustc ")


@pytest.mark.cargo
def test_a_compile_called_off_runs_no_rustc_and_records_nothing(tmp_path) -> None:
    source = tmp_path / "main.rs"
    source.write_text("fn main() {}\n")
    holder = GateHolder()
    env = clean_env(**holder.env(), THINPATCH_CAPTURE_ROOT=str(tmp_path / "captures"))
    argv = [shim("thinpatch-rustc"), real_rustc(), "--crate-name", "held", "--crate-type", "bin", str(source),
            "--out-dir", str(tmp_path / "out")]
    waiting = subprocess.Popen(argv, env=env, pass_fds=(holder.read_fd,), stderr=subprocess.PIPE, text=True)
    holder.stop()
    _, err = waiting.communicate(timeout=60)
    holder.close()
    assert waiting.returncode == 75 and "called off" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "captures").exists()
