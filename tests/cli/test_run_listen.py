"""`thinpatch run --listen`: the daemon it starts gets --listen, and the program it runs gets
the endpoint and the token in its environment; a daemon without an endpoint is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.run_session import RunError, RunOptions, Selection, remote_environment
from daemon.socket.listen_address import dial_url, parse_listen_address
from daemon.socket.remote_token import is_token, token_path


class StatusOnly:
    """What `remote_environment` asks of the daemon connection: its hello and a status reply."""

    def __init__(self, listen: str | None) -> None:
        self.hello = {"pid": 4242}
        self.daemon = {"pid": 4242, "version": "0.1.0", "protocol": 2, "socket": "/s"}
        if listen is not None:
            self.daemon["listen"] = listen

    async def request(self, message: dict) -> dict:
        assert message == {"type": "status"}
        return {"type": "status", "daemon": self.daemon, "workspaces": []}


def options(tmp_path: Path, listen: str) -> RunOptions:
    runtime = tmp_path / "thinpatch"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return RunOptions(
        workspace=tmp_path, selection=Selection(), program_args=[], socket_path=runtime / "thinpatch.sock",
        listen=parse_listen_address(listen),
    )


@pytest.mark.asyncio
async def test_the_program_gets_the_endpoint_and_the_token(tmp_path: Path) -> None:
    opts = options(tmp_path, "0.0.0.0:9876")
    env = await remote_environment(StatusOnly("ws://0.0.0.0:9876/thinpatch"), opts)
    assert env["THINPATCH_ADDR"] == "ws://127.0.0.1:9876/thinpatch"  # it runs here: loopback reaches it
    assert is_token(env["THINPATCH_TOKEN"])
    assert token_path(opts.socket_path).read_text().strip() == env["THINPATCH_TOKEN"]


@pytest.mark.asyncio
async def test_a_daemon_without_an_endpoint_is_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"pid 4242\) does not listen .*thinpatch stop.*--listen 127.0.0.1:9876"):
        await remote_environment(StatusOnly(None), options(tmp_path, "127.0.0.1:9876"))


def test_wildcard_endpoints_are_dialled_through_loopback() -> None:
    assert dial_url("ws://0.0.0.0:9876/thinpatch") == "ws://127.0.0.1:9876/thinpatch"
    assert dial_url("ws://[::]:9876/thinpatch") == "ws://[::1]:9876/thinpatch"
    assert dial_url("ws://10.0.0.5:9876/thinpatch") == "ws://10.0.0.5:9876/thinpatch"


def test_the_daemon_run_starts_is_given_listen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from daemon.cli import run_session

    started: list[list[str]] = []

    class Started:
        def __init__(self, argv, **_kwargs) -> None:
            started.append(list(argv))

        def poll(self) -> None:
            return None

    monkeypatch.setattr(subprocess, "Popen", Started)
    monkeypatch.setattr(run_session, "daemon_running", lambda _path: True)
    run_session.start_daemon(tmp_path / "s.sock", tmp_path / "log", parse_listen_address("0.0.0.0:9876"))
    assert started and started[0][-2:] == ["--listen", "0.0.0.0:9876"]
