"""The patch runner with real processes: rustc, cc, process groups and cancellation.

These tests record a real rustc invocation and link line by hand (rustc with a linker script
that saves its arguments), so they need rustc and cc but not cargo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import anyio
import pytest

from capture.store import CaptureRecord, Captures, CrateKey, LinkRecord, load_captures
from daemon.build.concurrency import beside
from daemon.build.crate_objects import written_objects
from daemon.build.crate_plans import plan_crates, resolve_top
from daemon.build.errors import CompileError, LinkError, MissingCapture, ToolNotFound
from daemon.build.processes import run_tool
from daemon.build.rebuild import build_patch, compile_crate

pytestmark = pytest.mark.skipif(shutil.which("rustc") is None or shutil.which("cc") is None,
                                reason="needs rustc and cc")

MAIN_RS = """\
fn answer() -> u32 {
    41
}

fn main() {
    println!("answer = {}", answer());
}
"""

SAVE_ARGS = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/link-args.txt"
exec cc "$@"
"""


def _rustc_args(src_dir: Path) -> list[str]:
    return [
        "--crate-name", "hello", "--edition=2021", "src/main.rs",
        "--error-format=json", "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
        "--crate-type", "bin", "--emit=dep-info,link", "-C", "debuginfo=0",
        "-C", "metadata=0123456789abcdef", "-C", "extra-filename=-0123456789abcdef",
        "--out-dir", str(src_dir / "target"), "-C", f"incremental={src_dir / 'target' / 'incremental'}",
        "-C", "link-arg=-Wl,--export-dynamic",
    ]


@pytest.fixture(scope="module")
def hello(tmp_path_factory):
    """A bin crate built once with rustc; its rustc args and link line as capture records."""
    root = tmp_path_factory.mktemp("hello crate")
    (root / "src").mkdir()
    (root / "src" / "main.rs").write_text(MAIN_RS)
    saver = root / "save-link.sh"
    saver.write_text(SAVE_ARGS)
    saver.chmod(0o755)
    args = _rustc_args(root)
    rustc = shutil.which("rustc")
    subprocess.run([rustc, *args, "-C", f"linker={saver}"], cwd=root, check=True, capture_output=True)
    link_args = (root / "link-args.txt").read_text().splitlines()
    return root, rustc, args, link_args


def make_captures(root: Path, rustc_path: str, rustc_args: list[str], link_args: list[str], **overrides) -> Captures:
    data = {
        "format": 1, "crate_name": "hello", "kind": "bin", "crate_types": ["bin"], "rustc": rustc_path,
        "args": rustc_args, "cwd": str(root), "env": dict(os.environ), "recorded_at": time.time(),
        "scope": "host-debug", "is_top": True, "extra_filename": "-0123456789abcdef",
    }
    data.update(overrides)
    link = {"format": 1, "linker": "cc", "args": link_args, "output": str(root / "target" / "hello"),
            "cwd": str(root), "crate_name": "hello", "recorded_at": time.time()}
    return Captures(
        capture_root=root / "captures",
        scope="host-debug",
        rustc={CrateKey("hello", "bin"): CaptureRecord.from_json(data, root / "hello.bin.json")},
        links={"hello": LinkRecord.from_json(link, root / "link.json")},
        warnings=[],
    )


def nm_defined(path: Path) -> set[str]:
    out = subprocess.run(["nm", "--defined-only", str(path)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.fixture
def edited_hello(hello):
    root, rustc, args, link_args = hello
    main = root / "src" / "main.rs"
    original = main.read_text()
    yield root, rustc, args, link_args, main
    main.write_text(original)


# --------------------------------------------------------------------------- run_tool


@pytest.mark.asyncio
async def test_run_tool_captures_output_and_status(tmp_path):
    run = await run_tool(["sh", "-c", "echo out; echo err >&2; exit 3"], cwd=str(tmp_path), env=os.environ, tool="sh")
    assert (run.returncode, run.stdout, run.stderr) == (3, "out\n", "err\n")
    assert run.elapsed_ms > 0


@pytest.mark.asyncio
async def test_cancellation_kills_the_whole_process_group(tmp_path):
    """The tool's child (a grandchild of ours) would sleep for an hour; it is gone within
    seconds of the cancellation. Deterministic under load: the grandchild holds the only write
    end of a FIFO, so its death is seen as end-of-file (no polling of pids, which a busy
    machine reuses)."""
    fifo = tmp_path / "held-by-grandchild"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    group_id = None  # the tool's process group, while it may still be alive
    try:
        script = f"sh -c 'echo $$; exec sleep 3600' > '{fifo}' & wait"
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(partial(run_tool, ["sh", "-c", script], cwd=str(tmp_path), env=os.environ, tool="sh"))
                said = b""
                while not said.endswith(b"\n"):
                    said += _read_fifo(reader) or b""
                    await anyio.sleep(0.02)
                group_id = os.getpgid(int(said))  # the grandchild's pid: it is running
                assert group_id != os.getpgrp()  # in the group run_tool made, not in ours
                group.cancel_scope.cancel()
        cancelled = time.monotonic()
        while _read_fifo(reader) != b"":  # EOF: no process holds the write end any more
            assert time.monotonic() - cancelled < 10, "the grandchild outlived the cancellation"
            await anyio.sleep(0.02)
        group_id = None
    finally:
        os.close(reader)
        if group_id is not None:  # still holding the FIFO: don't leave it sleeping for an hour
            try:
                os.killpg(group_id, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _read_fifo(fd: int) -> bytes | None:
    """What the FIFO holds, b"" at end-of-file (no writer left), None while a writer is silent."""
    try:
        return os.read(fd, 64)
    except BlockingIOError:
        return None


@pytest.mark.asyncio
async def test_missing_program_is_tool_not_found(tmp_path):
    with pytest.raises(ToolNotFound, match="thinpatch capture") as info:
        await run_tool([str(tmp_path / "no-such-rustc")], cwd=str(tmp_path), env=os.environ, tool="rustc")
    assert info.value.program == str(tmp_path / "no-such-rustc")


@pytest.mark.asyncio
async def test_missing_working_directory_is_missing_capture(tmp_path):
    with pytest.raises(MissingCapture, match="no longer exists"):
        await run_tool(["true"], cwd=str(tmp_path / "gone"), env=os.environ, tool="rustc")


# --------------------------------------------------------------------------- build_patch


@pytest.mark.asyncio
async def test_patch_keeps_symbol_names_and_gets_new_names(edited_hello, tmp_path):
    root, rustc, args, link_args, main = edited_hello
    host = root / "target" / "hello-0123456789abcdef"
    host_answer = {s for s in nm_defined(host) if "6answer" in s}
    assert len(host_answer) == 1

    main.write_text(MAIN_RS.replace("41", "42"))
    captures = make_captures(root, rustc, args, link_args)
    first = await build_patch(captures, [], tmp_path / "session")
    assert re.fullmatch(r"libhello-[0-9a-f]{8}-patch-1\.so", first.library.name) and first.library.is_file()
    assert host_answer <= nm_defined(first.library)
    assert first.rustc_ms > 0 and first.link_ms > 0
    assert [c.key for c in first.crates] == [CrateKey("hello", "bin")]
    # the patch calls std through the host: no second copy of std inside it
    assert not any("print" in s and s.startswith("_RNv") for s in nm_defined(first.library))

    second = await build_patch(captures, [CrateKey("hello", "bin")], tmp_path / "session")
    assert second.library.name == first.library.name.replace("-patch-1.", "-patch-2.")
    assert first.library.exists() and second.library.exists()
    assert second.program == CrateKey("hello", "bin") and second.edited == (CrateKey("hello", "bin"),)


@pytest.mark.asyncio
async def test_objects_left_from_an_earlier_build_are_never_linked(edited_hello, tmp_path):
    root, rustc, args, link_args, main = edited_hello
    captures = make_captures(root, rustc, args, link_args)
    main.write_text(MAIN_RS.replace("41", "42"))
    first = await build_patch(captures, [], tmp_path / "session")
    [crate] = first.crates
    obj_dir = crate.objects[0].parent
    # a unit that the next build no longer writes (another partition, an older unit count):
    # linking it would bring back old code or fail on duplicate symbols
    stale = obj_dir / "hello-0123456789abcdef.stale-unit.rcgu.o"
    shutil.copy2(crate.objects[0], stale)

    main.write_text(MAIN_RS.replace("41", "43"))
    second = await build_patch(captures, [], tmp_path / "session")
    assert not stale.exists()
    assert str(stale) not in second.link_argv
    assert set(second.crates[0].objects) == set(obj_dir.glob("*.o"))


@pytest.mark.asyncio
async def test_a_failed_build_lists_no_objects_so_nothing_reuses_them(edited_hello, tmp_path):
    root, rustc, args, link_args, main = edited_hello
    captures = make_captures(root, rustc, args, link_args)
    session = tmp_path / "session"
    main.write_text(MAIN_RS.replace("41", "42"))
    first = await build_patch(captures, [], session)
    [crate] = first.crates
    key = crate.key
    # unchanged since: the objects it listed are linked again without running rustc
    again = await build_patch(captures, [], session, reuse={key})
    assert again.crates[0].reused and again.crates[0].objects == crate.objects

    main.write_text(MAIN_RS.replace("    41\n", "    41 +\n"))
    with pytest.raises(CompileError):
        await build_patch(captures, [], session)
    assert all(o.exists() for o in crate.objects)  # still on disk, but no longer listed
    with pytest.raises(CompileError):  # so even "unchanged" compiles, and fails again
        await build_patch(captures, [], session, reuse={key})


def test_without_announcements_the_objects_of_this_run_are_the_newly_named_ones(tmp_path):
    old = tmp_path / "app.0abc.s1.rcgu.o"
    old.write_bytes(b"")
    earlier = {p.name for p in tmp_path.iterdir()}
    new = tmp_path / "app.0abc.s2.rcgu.o"
    new.write_bytes(b"")
    (tmp_path / "other.txt").write_bytes(b"")
    assert written_objects(tmp_path, earlier) == (new,)
    assert written_objects(tmp_path) == (old, new)


@pytest.mark.asyncio
async def test_a_rustc_that_announces_no_objects_links_only_the_objects_of_its_run(edited_hello, tmp_path):
    root, rustc, args, link_args, main = edited_hello
    captures = make_captures(root, rustc, args, link_args)
    top = resolve_top(captures)
    [plan] = plan_crates(captures, [top], top, tmp_path / "session")
    silent = dataclasses.replace(plan, args=tuple(a for a in plan.args if not a.startswith("--json")))
    first = await compile_crate(silent, tmp_path / "session")
    main.write_text(MAIN_RS.replace("41", "42"))
    second = await compile_crate(silent, tmp_path / "session")
    # the first run's objects are still on disk (removed beside the link), never this run's
    assert second.objects and all(o.exists() for o in first.objects)
    assert not set(first.objects) & set(second.objects)


@pytest.mark.asyncio
async def test_syntax_error_names_file_and_line_and_writes_no_library(edited_hello, tmp_path):
    root, rustc, args, link_args, main = edited_hello
    main.write_text(MAIN_RS.replace("    41\n", "    41 +\n"))
    with pytest.raises(CompileError) as info:
        await build_patch(make_captures(root, rustc, args, link_args), [], tmp_path / "session")
    err = info.value
    first = err.diagnostics.errors[0]
    assert first.span.file == str(main) and first.span.line in (2, 3)
    assert f"{main}:{first.span.line}:" in str(err)
    assert list((tmp_path / "session" / "patches").iterdir()) == []


@pytest.mark.asyncio
async def test_link_failure_reports_stderr_and_argv(edited_hello, tmp_path):
    root, rustc, args, link_args, _main = edited_hello
    captures = make_captures(root, rustc, args, [*link_args, "-lthinpatch_no_such_library"])
    with pytest.raises(LinkError) as info:
        await build_patch(captures, [], tmp_path / "session")
    assert "thinpatch_no_such_library" in info.value.stderr
    assert "-shared" in info.value.argv
    assert [p.name for p in (tmp_path / "session" / "patches").iterdir() if not p.name.startswith(".lock")] == []


@pytest.mark.asyncio
async def test_vanished_toolchain_is_tool_not_found(hello, tmp_path):
    root, rustc, args, link_args = hello
    captures = make_captures(root, rustc, args, link_args, rustc="/nonexistent/toolchain/bin/rustc")
    with pytest.raises(ToolNotFound, match="/nonexistent/toolchain/bin/rustc"):
        await build_patch(captures, [], tmp_path / "session")


@pytest.mark.asyncio
async def test_a_record_with_a_field_of_the_wrong_type_is_skipped_and_named(hello, tmp_path):
    root, rustc, args, link_args = hello
    rustc_dir = tmp_path / "thinpatch" / "captures" / "host-debug" / "rustc"
    rustc_dir.mkdir(parents=True)
    record = make_captures(root, rustc, args, link_args).rustc[CrateKey("hello", "bin")].to_json()
    (rustc_dir / "hello.bin.json").write_text(json.dumps({**record, "args": "--crate-name hello"}))
    captures = load_captures(tmp_path / "thinpatch")
    assert captures.rustc == {}
    assert captures.warnings == [f"skipped malformed capture record {rustc_dir / 'hello.bin.json'}: "
                                 "field 'args' must be a list of strings"]
    with pytest.raises(MissingCapture, match=r"hello\.bin\.json: field 'args'"):
        await build_patch(captures, [], tmp_path / "session")


@pytest.mark.asyncio
async def test_unknown_crate_and_missing_link_are_missing_capture(hello, tmp_path):
    root, rustc, args, link_args = hello
    captures = make_captures(root, rustc, args, link_args)
    with pytest.raises(MissingCapture, match=r"no capture for crate 'nope\.lib'.*captured: hello\.bin"):
        await build_patch(captures, [CrateKey("nope", "lib")], tmp_path / "session")
    captures.links.clear()
    with pytest.raises(MissingCapture, match="no link line captured for hello"):
        await build_patch(captures, [], tmp_path / "session")


@pytest.mark.asyncio
async def test_unreadable_capture_store_names_the_bad_file(tmp_path):
    rustc_dir = tmp_path / "thinpatch" / "captures" / "host-debug" / "rustc"
    rustc_dir.mkdir(parents=True)
    (rustc_dir / "hello.bin.json").write_text('{"format": 1, "crate_na')
    captures = load_captures(tmp_path / "thinpatch")
    with pytest.raises(MissingCapture) as info:
        await build_patch(captures, [], tmp_path / "session")
    message = str(info.value)
    assert "hello.bin.json" in message and "thinpatch capture" in message


@pytest.mark.asyncio
async def test_empty_capture_store(tmp_path):
    captures = load_captures(tmp_path / "never captured")
    with pytest.raises(MissingCapture, match="no program crate"):
        await build_patch(captures, [], tmp_path / "session")


@pytest.mark.asyncio
async def test_builds_of_one_session_take_turns(tmp_path):
    """A daemon and a one-shot `thinpatch patch` may build in the same session: never at once."""
    from daemon.build.concurrency import exclusive_build
    from daemon.build.session_cache import open_session

    layout = open_session(tmp_path / "session")
    order = []

    async def build(name):
        async with exclusive_build(layout, poll_s=0.01):
            order.append(f"{name} starts")
            await anyio.sleep(0.1)
            order.append(f"{name} ends")

    async with anyio.create_task_group() as tg:
        tg.start_soon(build, "first")
        await anyio.sleep(0.02)
        tg.start_soon(build, "second")
    assert order == ["first starts", "first ends", "second starts", "second ends"]


@pytest.mark.asyncio
async def test_beside_returns_the_work_and_raises_its_error_as_itself():
    tidied = []

    async def work():
        await anyio.sleep(0)
        return "built"

    assert await beside(lambda: tidied.append(1), work) == "built"

    async def failing():
        raise LinkError("ld: nope", ["cc"], 1)

    # callers catch LinkError, PatchRejected…: an exception group would slip past them
    with pytest.raises(LinkError):
        await beside(lambda: tidied.append(2), failing)
    assert tidied == [1, 2]
