"""Patches built from real `thinpatch capture` records of the fixture workspaces.

The captured workspaces are shared by the whole test session, so every edit here is undone
afterwards with the file's original bytes AND modification time: cargo then still sees the
workspace as built.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from capture.store import CrateKey, load_captures
from daemon.build.errors import CompileError, MissingCapture
from daemon.build.rebuild import build_patch

pytestmark = pytest.mark.cargo


@contextlib.contextmanager
def edited(path: Path, old: str, new: str):
    original = path.read_bytes()
    stat = path.stat()
    text = original.decode()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))
    try:
        yield path
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def defined_symbols(path: Path) -> set[str]:
    out = subprocess.run(["nm", "--defined-only", str(path)], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def symbols_containing(path: Path, *fragments: str) -> set[str]:
    return {s for s in defined_symbols(path) if all(f in s for f in fragments)}


def strings(path: Path) -> str:
    return path.read_bytes().decode("latin-1")


def _binary(result, name: str) -> Path:
    matches = [b for b in result.binaries if b.name == name]
    assert matches, f"no binary {name} in {result.binaries}"
    return matches[0]


@pytest.mark.asyncio
async def test_single_bin_patch(captured_single_bin, tmp_path):
    result = captured_single_bin
    host = _binary(result, "single_bin")
    captures = load_captures(result.capture_root, result.scope)
    host_greeting = symbols_containing(host, "8greeting17h")
    assert len(host_greeting) == 1

    source = result.workspace / "src" / "main.rs"
    with edited(source, 'format!("hello, {name}")', 'format!("patched hello, {name}")'):
        first = await build_patch(captures, [], tmp_path / "session")
        assert first.library.is_file() and re.fullmatch(r"libsingle_bin-[0-9a-f]{8}-patch-1\.so", first.library.name)
        # same mangled name as in the running binary: the jump table can pair them
        assert host_greeting <= defined_symbols(first.library)
        assert "patched hello, " in strings(first.library)
        assert "main" in defined_symbols(first.library)

        second = await build_patch(captures, [CrateKey("single_bin", "bin")], tmp_path / "session")
        assert second.library.name == first.library.name.replace("-patch-1.", "-patch-2.")
        assert first.rustc_ms > 0 and first.link_ms > 0

    # rustc kept several codegen units (one would make incremental reuse nothing) and every
    # unit's object went into the link, each exactly once
    [crate] = second.crates
    assert len(crate.objects) > 1 and len(set(crate.objects)) == len(crate.objects)
    assert [a for a in second.link_argv if a.endswith(".o")] == [str(o) for o in crate.objects]
    # the same incremental directory serves every save of the crate
    incremental = tmp_path / "session" / "incremental"
    assert [d.name for d in incremental.iterdir()] == ["single_bin.bin"]


@pytest.mark.asyncio
async def test_single_bin_syntax_error(captured_single_bin, tmp_path):
    result = captured_single_bin
    captures = load_captures(result.capture_root, result.scope)
    source = result.workspace / "src" / "main.rs"
    with edited(source, "(1..=n).map(|i| i * i).sum()", "(1..=n).map(|i| i * i).sum() +"):
        with pytest.raises(CompileError) as info:
            await build_patch(captures, [], tmp_path / "session")
    error = info.value.diagnostics.errors[0]
    assert error.span.file == str(source)
    line = source.read_text().splitlines().index("    (1..=n).map(|i| i * i).sum()") + 1
    assert error.span.line in (line, line + 1)
    assert f"{source}:" in str(info.value)
    assert not any((tmp_path / "session" / "patches").iterdir())


@pytest.mark.asyncio
async def test_corrupted_capture_gives_a_clear_error(captured_single_bin, tmp_path):
    result = captured_single_bin
    captures = load_captures(result.capture_root, result.scope)
    record = captures.crate("single_bin")
    # a copy of the capture store with the program's record cut in half
    copy_root = tmp_path / "thinpatch"
    for path in (result.capture_root / "captures").rglob("*.json"):
        dest = copy_root / path.relative_to(result.capture_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        dest.write_bytes(data[: len(data) // 2] if path == record.path else data)
    broken = load_captures(copy_root, result.scope)
    with pytest.raises(MissingCapture) as info:
        await build_patch(broken, [CrateKey("single_bin", "bin")], tmp_path / "session")
    message = str(info.value)
    assert record.path.name in message and "thinpatch capture" in message

    with pytest.raises(MissingCapture, match="no program crate"):
        await build_patch(load_captures(tmp_path / "nothing here"), [], tmp_path / "session")


@pytest.mark.asyncio
async def test_library_edit_in_workspace_patches_both_crates(captured_workspace, tmp_path):
    result = captured_workspace
    host = _binary(result, "app")
    captures = load_captures(result.capture_root, result.scope)
    host_describe = symbols_containing(host, "7corelib", "8describe17h")
    host_main = symbols_containing(host, "3app4main17h")
    assert len(host_describe) == 1 and len(host_main) == 1

    lib = result.workspace / "corelib" / "src" / "lib.rs"
    with edited(lib, 'format!("corelib describes {what}")', 'format!("corelib newly describes {what}")'):
        patch = await build_patch(captures, [CrateKey("corelib", "lib")], tmp_path / "session")
    assert [c.key for c in patch.crates] == [CrateKey("corelib", "lib"), CrateKey("app", "bin")]
    assert list(patch.objects) == [o for c in patch.crates for o in c.objects]
    assert {o.parent for o in patch.crates[0].objects}.isdisjoint({o.parent for o in patch.crates[1].objects})
    assert patch.edited == (CrateKey("corelib", "lib"),) and patch.program == CrateKey("app", "bin")
    symbols = defined_symbols(patch.library)
    # one library with both crates' code, under the running program's names
    assert host_describe <= symbols and host_main <= symbols
    assert "corelib newly describes " in strings(patch.library)
    # the build script's OUT_DIR and the proc-macro still worked in the replay
    assert symbols_containing(patch.library, "6answer17h")


@pytest.mark.asyncio
async def test_debian_dependencies_stay_in_the_host(captured_debian, tmp_path):
    result = captured_debian
    captures = load_captures(result.capture_root, result.scope)
    top = captures.top_crates()[0]
    source = Path(top.to_json()["src"])
    host = Path(captures.link_for(top.crate_name).output)  # cargo hard-links it to target/debug
    with edited(source, "fn main()", "fn unused_patch_marker() {}\nfn main()"):
        patch = await build_patch(captures, [], tmp_path / "session")
    regex_in_host = symbols_containing(host, "5regex")
    regex_in_patch = symbols_containing(patch.library, "5regex")
    assert regex_in_host
    # the patch calls regex/serde_json in the running program; it does not carry its own copy
    assert len(regex_in_patch) < len(regex_in_host) / 10
    assert patch.library.stat().st_size < host.stat().st_size / 10


@pytest.mark.asyncio
async def test_several_edited_crates_in_one_patch_and_unchanged_objects_reused(captured_workspace, tmp_path):
    result = captured_workspace
    captures = load_captures(result.capture_root, result.scope)
    lib = result.workspace / "corelib" / "src" / "lib.rs"
    app = result.workspace / "app" / "src" / "main.rs"
    session = tmp_path / "session"
    with edited(lib, "pub fn add(", 'pub fn added_in_a_patch() -> &\'static str {\n    "added"\n}\n\npub fn add('):
        both = await build_patch(captures, [CrateKey("app", "bin"), CrateKey("corelib", "lib")], session)
        assert [(c.key.name, c.reused) for c in both.crates] == [("corelib", False), ("app", False)]
        assert both.edited == (CrateKey("app", "bin"), CrateKey("corelib", "lib"))

        # the app uses what only the patched library has: it compiles against the new metadata,
        # and the library's object (unchanged) is linked again without recompiling
        with edited(app, 'corelib::describe("workspace")', 'corelib::added_in_a_patch()'):
            app, corelib = CrateKey("app", "bin"), CrateKey("corelib", "lib")
            again = await build_patch(captures, [app, corelib], session, reuse={corelib})
        assert [(c.key.name, c.reused) for c in again.crates] == [("corelib", True), ("app", False)]
        assert again.crates[0].rustc_ms == 0 and "added_in_a_patch" in " ".join(defined_symbols(again.library))

        # a crate reading metadata rebuilt in this build is never reused
        third = await build_patch(
            captures, [CrateKey("corelib", "lib"), CrateKey("app", "bin")], session, reuse={CrateKey("app", "bin")}
        )
        assert [(c.key.name, c.reused) for c in third.crates] == [("corelib", False), ("app", False)]
    assert len({both.library, again.library, third.library}) == 3


def _many_functions(count: int) -> str:
    """Enough code that the crate's code generation outlasts its front end by far."""
    return "".join(
        f"pub fn generated_{i}(n: u64) -> u64 {{ (0..n).map(|k| k * {i} + {i % 7}).filter(|k| k % 3 != 0).sum() }}\n"
        for i in range(count)
    )


def _rustc_processes_in(session: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "rustc" in line and str(session) in line]


@pytest.mark.asyncio
async def test_dependents_start_once_the_library_metadata_is_written(captured_workspace, tmp_path):
    result = captured_workspace
    captures = load_captures(result.capture_root, result.scope)
    lib = result.workspace / "corelib" / "src" / "lib.rs"
    with edited(lib, "pub fn add(", _many_functions(300) + "pub fn add("):
        patch = await build_patch(captures, [CrateKey("corelib", "lib")], tmp_path / "session")
    corelib, app = patch.crates
    assert (corelib.key.name, app.key.name) == ("corelib", "app")
    # the app's rustc ran while corelib was still generating code: rustc announced
    # corelib's .rmeta first (--json=artifacts), as cargo's pipelining relies on
    assert corelib.started_at < app.started_at < corelib.finished_at
    # the build's rustc time is the wall time of the overlapping runs, not their sum
    assert patch.rustc_ms < corelib.rustc_ms + app.rustc_ms
    assert symbols_containing(patch.library, "7corelib", "13generated_299")


@pytest.mark.asyncio
async def test_a_dependent_failing_stops_the_library_still_generating_code(captured_workspace, tmp_path):
    result = captured_workspace
    captures = load_captures(result.capture_root, result.scope)
    lib = result.workspace / "corelib" / "src" / "lib.rs"
    app = result.workspace / "app" / "src" / "main.rs"
    session = tmp_path / "session"
    with edited(lib, "pub fn add(", _many_functions(300) + "pub fn add("):
        with edited(app, 'corelib::describe("workspace")', "corelib::no_such_function()"):
            with pytest.raises(CompileError) as failure:
                await build_patch(captures, [CrateKey("corelib", "lib"), CrateKey("app", "bin")], session)
    assert failure.value.crate == "app"
    assert any("no_such_function" in d.message for d in failure.value.diagnostics.errors)
    assert _rustc_processes_in(session) == []
    assert not list(session.rglob("*.so"))


@pytest.mark.asyncio
async def test_a_library_that_fails_to_compile_starts_no_dependent(captured_workspace, tmp_path):
    result = captured_workspace
    captures = load_captures(result.capture_root, result.scope)
    lib = result.workspace / "corelib" / "src" / "lib.rs"
    session = tmp_path / "session"
    with edited(lib, "pub fn add(", "pub fn broken( {}\npub fn add("):
        with pytest.raises(CompileError) as failure:
            await build_patch(captures, [CrateKey("corelib", "lib")], session)
    assert failure.value.crate == "corelib"
    app_objects = [p for p in session.rglob("*.o") if "app" in p.parent.name]
    assert app_objects == [] and _rustc_processes_in(session) == []


@pytest.mark.asyncio
async def test_the_patcher_keeps_only_the_newest_libraries(captured_single_bin, tmp_path):
    from daemon.service.patcher import open_patcher

    result = captured_single_bin
    patcher = open_patcher(
        result.workspace, result.capture_root, scope=result.scope, session_root=tmp_path / "session", keep=2
    )
    source = result.workspace / "src" / "main.rs"
    libraries = []
    for n in range(3):
        with edited(source, 'format!("hello, {name}")', f'format!("hello #{n}, {{name}}")'):
            libraries.append(Path((await patcher.patch()).lib))
    left = sorted(p for p in patcher.session.patches_dir.iterdir() if p.suffix == ".so")
    assert left == sorted(libraries[1:]), left
