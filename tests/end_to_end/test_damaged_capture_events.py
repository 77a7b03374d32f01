"""A program's capture record damaged under a running daemon: subscribers get one event that
names the file and the fix, status says the same, and the daemon does not restart the
workspace every second."""

from __future__ import annotations

import json
import os

import anyio
import pytest

from daemon.socket.client import connect

DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "unknown format": lambda text: json.dumps({**json.loads(text), "format": 99}),
    "field of the wrong type": lambda text: json.dumps({**json.loads(text), "args": "--crate-name app"}),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_program_record_is_one_event_naming_it(served, damage):
    daemon, ws, root, _env = served
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
