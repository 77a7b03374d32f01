"""A program's capture record damaged under a running daemon: subscribers get one event that
names the file and the fix, status says the same, and the daemon does not restart the
workspace every second."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anyio
import pytest

from daemon.socket.client import connect
from tests.support.daemon_process import DaemonProcess
from tests.support.other_user import plant_capture_as_self

DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "unknown format": lambda text: json.dumps({**json.loads(text), "format": 99}),
    "field of the wrong type": lambda text: json.dumps({**json.loads(text), "args": "--crate-name app"}),
}


@pytest.fixture
def served(tmp_path):
    os.chmod(tmp_path, 0o700)
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "app"\n')
    (ws / "src" / "main.rs").write_text("fn main() {}\n")
    root = plant_capture_as_self(ws, tmp_path / "rustc.sh", tmp_path / "compiler-ran", recorded_at=time.time() + 3600)
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = DaemonProcess(tmp_path / "d" / "thinpatch.sock", [ws], env=dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "s")))
    daemon.wait_watching(ws)
    yield daemon, ws, root
    daemon.terminate()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_program_record_is_one_event_naming_it(served, damage):
    daemon, ws, root = served
    record = root / "captures" / "host-debug" / "rustc" / "app.bin.json"
    link = root / "captures" / "host-debug" / "link" / "app.json"

    async def main():
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(ws))
            record.write_text(DAMAGE[damage](record.read_text()))
            os.utime(link)  # as a new capture would: the daemon starts a new session
            seen = []
            with anyio.move_on_after(4.0):  # four discovery rounds
                async for event in client.events():
                    seen.append(event)
            return seen, await client.request({"type": "status"})

    seen, status = anyio.run(main)
    required = [e for e in seen if e["type"] == "full-rebuild-required"]
    assert len(required) == 1, seen
    assert required[0]["files"] == [str(record)]
    assert "thinpatch capture" in required[0]["reason"] and str(record) in required[0]["reason"]
    assert any(str(record) in p["message"] for p in status["problems"]), status
    log = daemon.log()
    assert log.count("fresh capture: new session") == 1
    assert "Traceback" not in log
