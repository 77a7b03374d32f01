"""The linker shim keeps the program crate's own objects, which rustc deletes after the link,
and ``daemon.analysis.baseline`` finds the files the running program was linked from."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from capture import store
from capture.linker_shim import OBJECTS_MANIFEST, keep_objects, rustc_objects
from daemon.analysis.baseline import captured_objects
from daemon.analysis.code_prints import PrintCache
from daemon.binary.elf_objects import STT_FUNC, object_files


def test_only_rustc_objects_are_kept_not_its_temporaries():
    args = [
        "-m64", "/t/deps/rustcAbC123/symbols.o", "/t/deps/app-1.app.x-cgu.0.rcgu.o", "rel/app-1.app.x-cgu.1.rcgu.o",
        "/t/deps/libcore-2.rlib", "-o", "/t/deps/app-1", "/t/deps/app-1.app.x-cgu.0.rcgu.o",
    ]
    assert rustc_objects(args, "/w") == ["/t/deps/app-1.app.x-cgu.0.rcgu.o", "/w/rel/app-1.app.x-cgu.1.rcgu.o"]


def _objects(directory: Path, *names: str) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(name.encode())
    return [str(directory / n) for n in names]


def test_a_new_set_replaces_the_old_one_only_when_complete(tmp_path):
    final = tmp_path / "objects" / "host-debug" / "app.1234"
    first = _objects(tmp_path / "one", "a.rcgu.o", "b.rcgu.o")
    keep_objects(str(final), first, 1.0, "/t/app")
    assert {p.name for p in final.iterdir()} == {OBJECTS_MANIFEST, "a.rcgu.o", "b.rcgu.o"}
    assert os.stat(final / "a.rcgu.o").st_ino == os.stat(first[0]).st_ino  # a hard link, no copy
    for path in first:
        os.unlink(path)  # as rustc does after the link
    assert (final / "b.rcgu.o").read_bytes() == b"b.rcgu.o"

    second = _objects(tmp_path / "two", "c.rcgu.o")
    with pytest.raises(OSError):
        keep_objects(str(final), [*second, str(tmp_path / "two" / "gone.rcgu.o")], 2.0, "/t/app")
    assert {p.name for p in final.iterdir()} == {OBJECTS_MANIFEST, "a.rcgu.o", "b.rcgu.o"}
    assert json.loads((final / OBJECTS_MANIFEST).read_text())["recorded_at"] == 1.0

    keep_objects(str(final), second, 3.0, "/t/app")
    assert {p.name for p in final.iterdir()} == {OBJECTS_MANIFEST, "c.rcgu.o"}
    assert sorted(p.name for p in final.parent.iterdir()) == ["app.1234"]  # no staging left behind


def test_a_symlink_is_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    final = tmp_path / "objects" / "host-debug" / "app.1234"
    final.parent.mkdir(parents=True)
    final.symlink_to(elsewhere)
    with pytest.raises(OSError, match="symbolic link"):
        keep_objects(str(final), _objects(tmp_path / "src", "a.rcgu.o"), 1.0, "/t/app")
    assert list(elsewhere.iterdir()) == []
    linked_source = tmp_path / "src" / "link.rcgu.o"
    linked_source.symlink_to(tmp_path / "src" / "a.rcgu.o")
    with pytest.raises(OSError, match="not a regular file"):
        keep_objects(str(tmp_path / "objects" / "other"), [str(linked_source)], 1.0, "/t/app")


def test_the_captured_program_keeps_its_objects(captured_workspace):
    caps = captured_workspace.captures
    link = caps.link_for("app")
    assert link is not None
    kept = store.link_objects_dir(caps.capture_root, link.scope or "", store.link_key(link.output))
    on_line = {Path(a).name for a in link.args if a.endswith(".rcgu.o")}
    assert on_line and all(not Path(a).exists() for a in link.args if a.endswith(".rcgu.o"))  # rustc deleted them
    assert {p.name for p in kept.iterdir()} == on_line | {OBJECTS_MANIFEST}
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700

    baseline = captured_objects(caps, link)
    assert baseline.unavailable == {}
    app = baseline.objects[store.CrateKey("app", "bin")]
    assert {p.name for p in app} == on_line
    corelib = baseline.objects[store.CrateKey("corelib", "lib")]
    assert len(corelib) == 1 and corelib[0].name.startswith("libcorelib") and corelib[0].suffix == ".rlib"
    assert store.CrateKey("macros", "proc-macro") not in baseline.objects

    functions = {s.name for p in app for o in object_files(p) for s in o.symbols if s.type == STT_FUNC and s.defined}
    assert any("3app4main" in n for n in functions)
    prints = PrintCache().merged(corelib)
    assert any("7corelib3add" in n for n in prints.digests())


def test_a_stale_or_rebuilt_baseline_is_unavailable(captured_workspace):
    caps = captured_workspace.captures
    link = caps.link_for("app")
    assert link is not None
    later = replace(link, recorded_at=link.recorded_at + 1)  # another link of the same output
    baseline = captured_objects(caps, later)
    assert "belong to another link" in baseline.unavailable[store.CrateKey("app", "bin")]
    earlier = replace(link, recorded_at=link.recorded_at - 3600)  # the rlib is newer than this link
    assert "rebuilt after the program was linked" in captured_objects(caps, earlier).unavailable[
        store.CrateKey("corelib", "lib")
    ]


@pytest.mark.cargo
def test_objects_that_cant_be_kept_never_break_the_link(fixture_copy, tmp_path):
    from daemon.cli.capture_run import run_capture

    ws = fixture_copy("single_bin")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = ws / "target" / "thinpatch" / "objects" / "host-debug"
    planted.parent.mkdir(parents=True)
    planted.symlink_to(elsewhere)
    state = tmp_path / "state"
    result = run_capture(ws, env=dict(os.environ, THINPATCH_STATE_DIR=str(state)))
    assert result.exit_code == 0
    link = result.captures.link_for("single_bin")
    assert link is not None and Path(link.output).is_file()
    assert list(elsewhere.iterdir()) == []
    log = store.log_path(result.capture_root).read_text()
    assert "thinpatch-linker: could not keep the program's objects" in log and "symbolic link" in log
    assert "symbolic link" in captured_objects(result.captures, link).unavailable[
        store.CrateKey("single_bin", "bin")
    ]
