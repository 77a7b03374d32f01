"""A real patch compared with the code the captured program was linked from."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from capture.store import CrateKey, load_captures
from daemon.analysis.baseline import captured_objects
from daemon.analysis.code_prints import PrintCache
from daemon.analysis.layout import program_layouts
from daemon.analysis.patch import analyse_patch
from daemon.analysis.reach import REACHED
from daemon.binary.elf_objects import STT_FUNC, object_files
from daemon.build.rebuild import build_patch

pytestmark = pytest.mark.cargo

APP, CORELIB = CrateKey("app", "bin"), CrateKey("corelib", "lib")


@contextlib.contextmanager
def edited(path: Path, old: str, new: str):
    original, info = path.read_bytes(), path.stat()
    assert old in original.decode()
    path.write_text(original.decode().replace(old, new, 1))
    try:
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


@pytest.mark.asyncio
async def test_a_patch_changes_what_was_edited_and_nothing_else(captured_workspace, tmp_path):
    # patches keep the capture's debug info: less would change unoptimised code everywhere
    # (test_less_debug_info_changes_unoptimised_code)
    captures = load_captures(captured_workspace.capture_root, captured_workspace.scope)
    link = captures.link_for("app")
    assert link is not None
    baseline = captured_objects(captures, link)
    running = [p for key in (APP, CORELIB) for p in baseline.objects[key]]
    cache = PrintCache()

    unedited = await build_patch(captures, [APP, CORELIB], tmp_path / "session")
    entry = next(n for n in cache.merged(unedited.objects).nodes if n.startswith("_ZN3app4main17h"))
    same = analyse_patch(cache, running, unedited.objects, [entry])
    # the daemon's replay compiles the very code cargo did: no function or static differs
    assert same.changes.changed == same.changes.added == same.changes.removed == ()
    assert same.reach.verdicts == []

    lib = captured_workspace.workspace / "corelib" / "src" / "lib.rs"
    with edited(lib, "corelib describes {what}", "corelib now describes {what}"):
        patch = await build_patch(captures, [CORELIB], tmp_path / "session")
    analysis = analyse_patch(cache, running, patch.objects, [entry])
    assert [n for n in analysis.changes.changed if "corelib" in n] == [
        n for n in analysis.changes.changed if "8describe17h" in n
    ] != []
    [verdict] = [v for v in analysis.reach.verdicts if "8describe17h" in v.name]
    assert verdict.status == REACHED and verdict.path[0] == entry


def test_rustc_allocator_shims_hide_no_layout(captured_workspace):
    """The program's link holds rustc's allocator shims, an object without debug info. It uses
    no program type, so it must not make every type new to a patch "unknown"."""
    captures = load_captures(captured_workspace.capture_root, captured_workspace.scope)
    link = captures.link_for("app")
    assert link is not None
    paths = [p for paths in captured_objects(captures, link).objects.values() for p in paths]
    bare = [o for p in paths for o in object_files(p) if o.section_named(".debug_info") is None]
    assert bare, "the captured link has no object without debug info: nothing is tested"
    shims = [s.name for o in bare for s in o.symbols if s.defined and s.type == STT_FUNC]
    assert shims and all(name.startswith("_R") and "___rustc" in name for name in shims)
    assert program_layouts(paths).without_debug_info == ()
