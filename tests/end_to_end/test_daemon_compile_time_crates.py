"""Edits to code that runs at compile time (proc-macros, build scripts) can't be patched:
the daemon says so with `full-rebuild-required` instead of building anything."""

from __future__ import annotations

import os

import anyio
import pytest

from daemon.socket.client import connect
from tests.support.daemon_process import DaemonProcess

pytestmark = pytest.mark.cargo


@pytest.mark.asyncio
@pytest.mark.parametrize("relative", ["macros/src/lib.rs", "app/build.rs"])
async def test_compile_time_code_edit_requires_a_full_rebuild(captured_workspace, tmp_path, relative):
    workspace = captured_workspace.workspace
    path = workspace / relative
    assert path.exists(), f"tests/fixtures/workspace has no {relative}: this test has nothing to edit"
    daemon = DaemonProcess(tmp_path / "d.sock", [workspace])
    original = path.read_bytes()
    stat = path.stat()
    try:
        daemon.wait_watching(workspace)
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(workspace))
            path.write_bytes(original + b"\n// an edit\n")
            with anyio.fail_after(30):
                async for event in client.events():
                    if event["type"] in ("full-rebuild-required", "build-started", "patch-ready", "build-failed"):
                        break
        assert event["type"] == "full-rebuild-required", event
        assert str(path) in event["files"]
        assert "thinpatch capture" in event["reason"]
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the shared capture stays fresh for cargo
        daemon.terminate()
