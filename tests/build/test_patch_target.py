"""Patches for programs built with --target: named for the OS the program runs on, not the
host's, and the program's target named in what the daemon says about it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from capture.platforms import Platform
from capture.store import CaptureRecord, Captures, CrateKey, LinkRecord
from daemon.build.session_cache import SessionLayout, patch_library_filename, target_os
from daemon.service.programs import programs_of


@pytest.mark.parametrize(
    ("target", "platform"),
    [
        ("aarch64-linux-android", Platform.LINUX),
        ("x86_64-unknown-linux-gnu", Platform.LINUX),
        ("aarch64-apple-ios", Platform.MACOS),
        ("aarch64-apple-darwin", Platform.MACOS),
        ("x86_64-pc-windows-msvc", Platform.WINDOWS),
    ],
)
def test_the_target_decides_the_os(target: str, platform: Platform) -> None:
    assert target_os(target) is platform


@pytest.mark.parametrize("host", ["darwin", "linux", "win32"])
def test_an_android_patch_is_a_lib_so_whatever_the_host(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setattr(sys, "platform", host)
    android = target_os("aarch64-linux-android")
    assert patch_library_filename("my-game", 3, android, "t4g") == "libmy_game-t4g-patch-3.so"
    path = SessionLayout(Path("/s")).patch_library_path("my-game", 3, android, "t4g")
    assert path.name == "libmy_game-t4g-patch-3.so"
    assert patch_library_filename("app", 1, target_os("aarch64-apple-ios")) == "libapp-patch-1.dylib"


def test_without_a_target_or_with_an_unknown_one_the_host_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert target_os(None) is Platform.MACOS
    assert target_os("wasm32-unknown-unknown") is Platform.MACOS
    monkeypatch.setattr(sys, "platform", "linux")
    assert target_os(None) is Platform.LINUX


def test_events_name_the_program_s_target() -> None:
    def record(target: str | None) -> CaptureRecord:
        data = {
            "format": 1, "crate_name": "game", "kind": "bin", "crate_types": ["bin"], "rustc": "rustc",
            "args": ["--crate-name", "game", "src/main.rs"], "cwd": "/ws", "env": {}, "recorded_at": 1.0,
            "scope": "aarch64-linux-android-debug", "is_top": True, "target": target,
        }
        return CaptureRecord.from_json(data, Path("/c/game.bin.json"))

    output = "/ws/target/aarch64-linux-android/debug/deps/game-1111"
    link = LinkRecord.from_json(
        {"format": 1, "linker": "cc", "args": [], "output": output, "crate_name": "game", "recorded_at": 1.0},
        Path("/c/link/game.json"),
    )
    for target in ("aarch64-linux-android", None):
        captures = Captures(
            Path("/ws/target/thinpatch"), "aarch64-linux-android-debug", {CrateKey("game", "bin"): record(target)},
            {"game": link}, [],
        )
        (program,), _ = programs_of("/ws", captures, {output: "b1d"})
        assert program.describe()["target"] == target
