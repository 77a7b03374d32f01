"""A save that only a restart can run is decided from the compiled objects: no link, no library."""

from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from capture.store import load_captures
from daemon.analysis.verdicts import NEEDS_RESTART
from daemon.build.session_cache import open_session
from daemon.service.patcher import Patcher

pytestmark = pytest.mark.cargo

# The initial value of a static: the running program keeps its own, so only a restart runs it.
STATIC_BEFORE, STATIC_AFTER = "AtomicUsize::new(0)", "AtomicUsize::new(7)"


@contextlib.contextmanager
def edited(path: Path, old: str, new: str):
    original, stat = path.read_bytes(), path.stat()
    assert old in original.decode()
    path.write_text(original.decode().replace(old, new, 1))
    try:
        yield
    finally:  # the capture is shared by the test session: cargo must still see it as built
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def libraries(patcher: Patcher) -> list[Path]:
    return sorted(patcher.session.patches_dir.glob("*.so")) if patcher.session.patches_dir.exists() else []


@pytest.mark.asyncio
async def test_a_save_only_a_restart_runs_leaves_no_library(captured_single_bin, tmp_path: Path) -> None:
    result = captured_single_bin
    captures = load_captures(result.capture_root, result.scope)
    patcher = Patcher(result.workspace, captures, open_session(tmp_path / "session"))
    with edited(result.workspace / "src" / "main.rs", STATIC_BEFORE, STATIC_AFTER):
        outcome = await patcher.patch()
    assert outcome.verdict.verdict == NEEDS_RESTART, outcome.verdict
    assert "CALLS" in str(outcome.verdict.reason)
    assert outcome.lib == "" and libraries(patcher) == []
    assert outcome.timings["verify_ms"] == 0.0 and outcome.timings["rustc_ms"] > 0
    data = outcome.to_json()
    assert data["jump_table"]["map"] == {} and data["crate"] == "single_bin"


@pytest.mark.asyncio
async def test_the_link_is_stopped_once_the_save_needs_a_restart(captured_single_bin, tmp_path: Path) -> None:
    """A linker that never finishes: the verdict comes anyway, and the linker is killed."""
    result = captured_single_bin
    captures = load_captures(result.capture_root, result.scope)
    started = tmp_path / "linker.pid"
    linker = tmp_path / "slow-linker"
    linker.write_text(f"#!/bin/sh\necho $$ > '{started}'\nexec sleep 600\n")
    linker.chmod(0o755)
    captures.links = {key: replace(link, linker=str(linker)) for key, link in captures.links.items()}
    patcher = Patcher(result.workspace, captures, open_session(tmp_path / "session"))
    with edited(result.workspace / "src" / "main.rs", STATIC_BEFORE, STATIC_AFTER):
        with anyio.fail_after(120):  # without the early verdict: until the linker ends, 600 s
            outcome = await patcher.patch()
    assert outcome.verdict.verdict == NEEDS_RESTART and outcome.timings["link_ms"] == 0.0
    pid = int(started.read_text())  # the link had started
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert libraries(patcher) == [] and not list((tmp_path / "session").rglob("*.tmp"))


@pytest.mark.asyncio
async def test_patches_go_on_while_cargo_has_removed_the_program(captured_single_bin, tmp_path: Path) -> None:
    """cargo removes a program it starts to rebuild (`thinpatch run`'s held capture build does
    so while a patch builds): the process still runs that build, and patches are for it."""
    result = captured_single_bin
    captures = load_captures(result.capture_root, result.scope)
    patcher = Patcher(result.workspace, captures, open_session(tmp_path / "session"))
    main = result.workspace / "src" / "main.rs"
    with edited(main, '"hello, {name}"', '"hullo, {name}"'):
        first = await patcher.patch()
    (binary,) = [Path(link.output) for link in captures.links.values()]
    aside = binary.with_name(binary.name + ".aside")
    os.rename(binary, aside)
    try:
        with edited(main, '"hello, {name}"', '"howdy, {name}"'):
            second = await patcher.patch()
    finally:
        os.rename(aside, binary)
    assert first.lib and second.lib and second.lib != first.lib
    first_map, second_map = (p.to_json()["jump_table"]["map"] for p in (first, second))
    assert set(second_map) == set(first_map) != set()  # the same functions of the running program
