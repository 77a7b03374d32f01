"""The daemon watches what the compiler reads: a module added after the capture, and a
source that is a symlink edited through its target. Real capture, daemon and file events."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.socket.client import connect
from tests.conftest import copy_fixture
from tests.support.daemon_process import collect_until, quiet_mark, save_like_an_editor

pytestmark = pytest.mark.cargo


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, capture_state_dir) -> Path:
    from daemon.cli.capture_run import run_capture

    parent = tmp_path_factory.mktemp("watched sources")
    ws = copy_fixture("twobins", parent)
    # shared/src/lib.rs lives outside the workspace; the crate sees it through a symlink.
    elsewhere = parent / "kept elsewhere"
    elsewhere.mkdir()
    lib = ws / "shared" / "src" / "lib.rs"
    (elsewhere / "lib.rs").write_text(lib.read_text())
    lib.unlink()
    lib.symlink_to(elsewhere / "lib.rs")
    assert run_capture(ws).exit_code == 0
    return ws


def outcome_after(mark: int):
    return lambda e: e["seq"] > mark and not e.get("replayed") and e["type"] in ("patch-ready", "build-failed")


@pytest.mark.asyncio
async def test_a_module_added_after_the_capture_is_watched_from_the_next_build(workspace, daemon):
    main = workspace / "alpha" / "src" / "main.rs"
    extra = workspace / "alpha" / "src" / "extra.rs"
    async with connect(daemon.socket_path) as client:
        await client.subscribe(str(workspace))
        mark = await quiet_mark(client, workspace)
        extra.write_text('pub fn word() -> &\'static str {\n    "extra v1"\n}\n')
        text = main.read_text()
        save_like_an_editor(main, "mod extra;\n" + text.replace('"{} alpha v1"', '"{} alpha v1 {}"').replace(
            'shared::describe("alpha"))', 'shared::describe("alpha"), extra::word())'))
        events = await collect_until(client, outcome_after(mark), timeout=90)
        assert events[-1]["type"] == "patch-ready", events[-1]

        mark = await quiet_mark(client, workspace)
        save_like_an_editor(extra, extra.read_text().replace("extra v1", "extra v2"))
        events = await collect_until(client, outcome_after(mark), timeout=60)
        assert events[-1]["type"] == "patch-ready", events[-1]
        [started] = [e for e in events if e["type"] == "build-started" and e["seq"] > mark]
        assert started["files"] == [str(extra)]
        assert started["crate"] == "alpha"


@pytest.mark.asyncio
async def test_a_symlinked_source_edited_through_its_target_patches(workspace, daemon):
    target = Path(os.path.realpath(workspace / "shared" / "src" / "lib.rs"))
    assert target.parent.name == "kept elsewhere"
    async with connect(daemon.socket_path) as client:
        await client.subscribe(str(workspace))
        mark = await quiet_mark(client, workspace)
        save_like_an_editor(target, target.read_text().replace("shared v1", "shared v2"))
        events = await collect_until(client, outcome_after(mark), timeout=90)
        assert events[-1]["type"] == "patch-ready", events[-1]
        started = [e for e in events if e["type"] == "build-started" and e["seq"] > mark]
        assert started and started[0]["crate"] == "shared"
