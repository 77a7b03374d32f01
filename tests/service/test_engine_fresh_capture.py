"""A program built under capture a moment ago is served when it subscribes, not refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from daemon.cli.capture_run import run_capture
from daemon.service import engine as engine_module
from daemon.service.engine import Engine, EngineOptions
from daemon.service.programs import read_programs
from daemon.socket.protocol import Subscription

pytestmark = pytest.mark.cargo


def captured_build_id(workspace: Path, env: dict[str, str]) -> str:
    result = run_capture(workspace, env=env)
    assert result.exit_code == 0, result
    programs, _, _ = read_programs(os.path.realpath(workspace), result.capture_root)
    [program] = programs
    assert program.build_id
    return program.build_id


@pytest.mark.asyncio
async def test_a_fresh_capture_is_served_when_its_program_subscribes(fixture_copy, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "DISCOVERY_INTERVAL_S", 3600.0)  # no timed look comes to the rescue
    env = dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "state"))
    workspace = fixture_copy("single_bin")
    first = await anyio.to_thread.run_sync(captured_build_id, workspace, env)
    events: list[dict] = []
    engine = Engine(events.append, env=env, options=EngineOptions(warm_up=False))
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        assert [p.build_id for p in engine.programs()] == [first]

        main = workspace / "src" / "main.rs"
        main.write_text(main.read_text().replace("hello, {name}", "hello again, {name}"))
        second = await anyio.to_thread.run_sync(captured_build_id, workspace, env)
        assert second != first

        with anyio.fail_after(60):
            subscription, notices = await engine.identify(Subscription(pid=None, build_id=second))
        assert notices == [] and subscription.build_id == second
        assert [p.build_id for p in engine.programs()] == [second]
        # the earlier binary is told to restart, not taken for an unknown one
        _, notices = await engine.identify(Subscription(pid=None, build_id=first))
        assert [n["reason"] for n in notices] == ["old-session"]
        # a binary no capture made is still refused, after one more look
        _, notices = await engine.identify(Subscription(pid=None, build_id="0123456789abcdef"))
        assert [n["reason"] for n in notices] == ["not-captured"]
        tg.cancel_scope.cancel()
    assert "session-reset" in [e["type"] for e in events]


@pytest.mark.asyncio
async def test_subscribers_asking_together_share_the_looks(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(engine_module, "DISCOVERY_INTERVAL_S", 3600.0)
    engine = Engine(env=dict(os.environ, THINPATCH_STATE_DIR=str(tmp_path / "state")))
    scans: list[float] = []
    scan = engine.scan

    def slow_scan(*args):  # long enough for every subscriber to ask while the first look runs
        scans.append(time.monotonic())
        time.sleep(0.3)
        return scan(*args)

    monkeypatch.setattr(engine, "scan", slow_scan)
    async with anyio.create_task_group() as tg:
        await tg.start(engine.run)
        scans.clear()
        async with anyio.create_task_group() as subscribers:
            for n in range(6):
                subscribers.start_soon(engine.identify, Subscription(pid=None, build_id=f"{n:016x}"))
        # one look that began after they all asked (or two, if some asked after it began), not six
        assert 1 <= len(scans) <= 2
        tg.cancel_scope.cancel()
