"""A held capture build (`thinpatch run`'s early build): cargo starts, every compile waits at the
shim's gate, and the build either goes ahead or is called off leaving everything as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from capture import store
from daemon.cli.capture_run import BuildHold, CalledOff, CaptureError, capture_workspace

pytestmark = pytest.mark.cargo


def compiles_waiting(workspace: Path) -> list[int]:
    """Pids of rustc shims of ``workspace``'s build that hold a compile (at the gate)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if any(a.endswith(b"thinpatch-rustc") for a in argv) and b"--crate-name" in argv and cwd == str(workspace):
            found.append(int(entry))
    return found


async def until_held(workspace: Path) -> None:
    with anyio.fail_after(120):
        while not compiles_waiting(workspace):
            await anyio.sleep(0.02)


def program_of(result) -> Path:
    (binary,) = [Path(link.output) for link in result.captures.links.values()]
    return binary


def state(result) -> dict:
    """What a build called off must leave as it was: the records, the program, the sources' times."""
    captures = store.load_captures(result.capture_root, result.scope)
    binary = program_of(result)
    return {
        "records": sorted((k.label, r.recorded_at) for k, r in captures.rustc.items()),
        "links": sorted((k, link.recorded_at) for k, link in captures.links.items()),
        "program": (binary.stat().st_ino, binary.stat().st_mtime_ns),
        "sources": sorted((p.name, p.stat().st_mtime_ns) for p in (result.workspace / "src").iterdir()),
    }


async def held_build(workspace: Path, known, hold: BuildHold, decide) -> object:
    """Start a held capture build, call ``decide()`` once a compile waits, return its outcome
    (the result, or the exception it raised)."""
    outcome: dict[str, object] = {}

    async def build() -> None:
        try:
            outcome["result"] = await capture_workspace(workspace, known=known, hold=hold)
        except Exception as exc:
            outcome["result"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(build)
        await until_held(workspace)
        decide()
    return outcome["result"]


@pytest.mark.asyncio
async def test_a_build_called_off_leaves_capture_program_and_sources_as_they_were(
    fixture_copy, capture_state_dir, capfd
) -> None:
    workspace = fixture_copy("single_bin")
    first = await capture_workspace(workspace)
    assert first.ok
    before = state(first)
    capfd.readouterr()
    hold = BuildHold()
    outcome = await held_build(workspace, first.info, hold, hold.call_off)
    assert isinstance(outcome, CalledOff)
    # cargo removed the program it was about to rebuild; it is put back, the same file
    assert state(first) == before
    shown = capfd.readouterr()
    assert "Compiling" not in shown.err and "error" not in shown.err, shown.err  # nothing of it is shown
    assert not list(first.capture_root.glob("held/*/*")) and not list(first.capture_root.glob("last-good/*/*"))
    with anyio.fail_after(30):  # a held compile cargo had started sees the gate closed, and exits
        while compiles_waiting(workspace):
            await anyio.sleep(0.02)


@pytest.mark.asyncio
async def test_a_build_that_goes_ahead_is_a_capture_and_shows_cargo(fixture_copy, capture_state_dir, capfd) -> None:
    workspace = fixture_copy("single_bin")
    first = await capture_workspace(workspace)
    capfd.readouterr()
    hold = BuildHold()
    started = time.time()
    result = await held_build(workspace, first.info, hold, hold.go)
    assert not isinstance(result, Exception), result
    assert result.ok and result.captured == first.captured
    assert all(r.recorded_at >= started for r in result.captures.rustc.values())  # recorded by this build
    assert program_of(result).exists()
    assert "Compiling single_bin" in capfd.readouterr().err


@pytest.mark.asyncio
async def test_a_held_build_that_fails_after_going_ahead_keeps_the_program_cargo_removed(
    fixture_copy, capture_state_dir
) -> None:
    """The program is removed by cargo before the decision, so the last good capture must come
    from the copy held aside, and a failed build puts that very file back."""
    workspace = fixture_copy("single_bin")
    first = await capture_workspace(workspace)
    before = state(first)
    main = workspace / "src" / "main.rs"
    hold = BuildHold()

    def break_then_go() -> None:
        main.write_text(main.read_text() + "\nfn broken() -> u32 { \"not a number\" }\n")
        hold.go()

    result = await held_build(workspace, first.info, hold, break_then_go)
    assert not isinstance(result, Exception), result
    assert not result.ok
    after = state(first)
    assert after["records"] == before["records"] and after["links"] == before["links"]
    assert after["program"] == before["program"]


@pytest.mark.asyncio
async def test_an_error_in_a_build_on_an_assumption_arrives_as_itself(fixture_copy, capture_state_dir) -> None:
    """Not wrapped in an exception group: callers catch CaptureError."""
    workspace = fixture_copy("single_bin")
    first = await capture_workspace(workspace)
    no_cargo = {**os.environ, "PATH": str(workspace)}  # cargo can't be found
    with pytest.raises(CaptureError, match="cannot run `cargo`"):
        await capture_workspace(workspace, env=no_cargo, known=first.info)


@pytest.mark.asyncio
async def test_programs_a_killed_held_build_left_aside_go_back_before_the_next_capture(
    fixture_copy, capture_state_dir
) -> None:
    """`run` killed while its held build waited, after cargo removed the program: the next
    capture (here one that fails) still keeps that program as the last good one."""
    from daemon.cli.capture_run import hold_programs

    workspace = fixture_copy("single_bin")
    first = await capture_workspace(workspace)
    before = state(first)
    assert hold_programs(first.capture_root, first.scope) is not None
    program_of(first).unlink()  # as cargo does before it rebuilds the crate
    main = workspace / "src" / "main.rs"
    main.write_text(main.read_text() + "\nfn broken() -> u32 { \"not a number\" }\n")
    failed = await capture_workspace(workspace)
    assert not failed.ok
    assert state(first)["program"] == before["program"]
    assert not list(first.capture_root.glob("held/*/*"))
