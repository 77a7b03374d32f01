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


def test_a_record_damaged_while_the_daemon_runs_is_one_event_and_a_problem(served):
    """No new capture: a record file rewritten with garbage under a running daemon."""
    daemon, ws, root, _env = served
    record = root / "captures" / "host-debug" / "rustc" / "app.bin.json"
    good = record.read_text()

    async def main():
        async with connect(daemon.socket_path) as client:
            await client.subscribe(workspace=str(ws))
            record.write_text("{ garbage")
            seen = []
            with anyio.move_on_after(3.5):
                async for event in client.events():
                    seen.append(event)
            damaged = await client.request({"type": "status"})
            record.write_text(good)
            await anyio.sleep(2.5)
            return seen, damaged, await client.request({"type": "status"})

    seen, damaged, repaired = anyio.run(main)
    required = [e for e in seen if e["type"] == "full-rebuild-required"]
    assert len(required) == 1, seen
    assert required[0]["files"] == [str(record)]
    assert "thinpatch capture" in required[0]["reason"]
    assert any(str(record) in p["message"] and "thinpatch capture" in p["message"] for p in damaged["problems"])
    assert repaired["problems"] == [], repaired
    assert "Traceback" not in daemon.log()


def test_a_record_damaged_before_the_daemon_starts_is_a_problem_and_a_replayed_event(tmp_path):
    """The program's record is damaged, another crate's is fine: the workspace is served
    without the program, and status and every new subscriber say why."""
    from tests.support.daemon_process import DaemonProcess
    from tests.support.other_user import plant_capture_as_self

    os.chmod(tmp_path, 0o700)
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "Cargo.toml").write_text('[package]\nname = "app"\n')
    (ws / "src" / "main.rs").write_text("fn main() {}\n")
    (ws / "src" / "lib.rs").write_text("\n")
    root = plant_capture_as_self(ws, tmp_path / "rustc.sh", tmp_path / "compiler-ran", recorded_at=9e9)
    rustc = root / "captures" / "host-debug" / "rustc"
    record = json.loads((rustc / "app.bin.json").read_text())
    lib = {**record, "crate_name": "helper", "kind": "lib", "crate_types": ["lib"], "is_top": False,
           "args": ["--crate-name", "helper", "--crate-type", "lib", "src/lib.rs"], "src": str(ws / "src" / "lib.rs")}
    (rustc / "helper.lib.json").write_text(json.dumps(lib))
    (rustc / "app.bin.json").write_text('{"format": 1, "crate_name": ')
    env = dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "state"))
    (tmp_path / "d").mkdir(mode=0o700)
    daemon = DaemonProcess(tmp_path / "d" / "thinpatch.sock", [ws], env=env)
    try:
        daemon.wait_watching(ws)

        async def main():
            async with connect(daemon.socket_path) as client:
                await client.subscribe(workspace=str(ws))
                seen = []
                with anyio.move_on_after(2.5):
                    async for event in client.events():
                        seen.append(event)
                return seen, await client.request({"type": "status"})

        seen, status = anyio.run(main)
        log = daemon.log()
    finally:
        daemon.terminate()
    damaged = str(rustc / "app.bin.json")
    required = [e for e in seen if e["type"] == "full-rebuild-required"]
    assert len(required) == 1 and required[0].get("replayed"), seen
    assert required[0]["files"] == [damaged]
    problems = [p for p in status["problems"] if p["workspace"] == str(ws)]
    assert problems and damaged in problems[0]["message"] and "thinpatch capture" in problems[0]["message"], status
    assert "Traceback" not in log
