"""The one rule for which of cargo's variables a recorded rustc invocation keeps."""

from __future__ import annotations

from capture.environment import replayable_env
from capture.rustc_shim import recorded_env

CARGO_ENV = {
    "CARGO_MAKEFLAGS": "-j --jobserver-fds=3,4",
    "MAKEFLAGS": "x",
    "MFLAGS": "y",
    "RUSTC_WORKSPACE_WRAPPER": "thinpatch-rustc",
    "RUSTC_WRAPPER": "w",
    "THINPATCH_CAPTURE_ROOT": "/t",
    "CARGO_PKG_NAME": "app",
    "CARGO_MANIFEST_DIR": "/ws/app",
    "OUT_DIR": "/t/out",
    "PATH": "/usr/bin",
}


def test_the_shim_records_what_a_replay_keeps():
    kept = {"CARGO_PKG_NAME": "app", "CARGO_MANIFEST_DIR": "/ws/app", "OUT_DIR": "/t/out", "PATH": "/usr/bin"}
    assert replayable_env(CARGO_ENV) == kept
    assert recorded_env(CARGO_ENV) == kept
