"""Every patch reaches exactly the processes it was built for.

A real workspace with two bins over one shared library, captured in debug (and later
release), a real `thinpatch serve`, and the real binaries running. Each process is
subscribed by its pid only, as the README tells apps to do; the daemon tells which
program it runs from its binary's build ID.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from daemon.binary.build_id import read_build_id
from daemon.socket.client import connect
from tests.conftest import copy_fixture
from tests.support.daemon_process import DaemonProcess, collect_until, quiet_mark, save_like_an_editor

pytestmark = pytest.mark.cargo


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, capture_state_dir) -> Path:
    from daemon.cli.capture_run import run_capture

    ws = copy_fixture("twobins", tmp_path_factory.mktemp("program identity"))
    assert run_capture(ws).exit_code == 0
    return ws


@pytest.fixture(scope="module")
def daemon(workspace, tmp_path_factory):
    d = DaemonProcess(tmp_path_factory.mktemp("sock") / "thinpatch.sock", [workspace], "--debounce-ms", "50")
    d.wait_watching(workspace)
    yield d
    d.kill()


class Running:
    """A program started from a binary, killed at the end of the test."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.proc = subprocess.Popen([str(binary)], stdout=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def start():
    started: list[Running] = []

    def run(binary: Path) -> Running:
        started.append(Running(binary))
        return started[-1]

    yield run
    for process in started:
        process.stop()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    save_like_an_editor(path, text.replace(old, new))


def ready(event: dict) -> bool:
    return event["type"] == "patch-ready" and not event.get("replayed")


async def patches_within(client, seconds: float) -> list[dict]:
    """Every live patch that reaches ``client`` in the next ``seconds``."""
    got: list[dict] = []
    with anyio.move_on_after(seconds):
        async for event in client.events():
            if ready(event):
                got.append(event)
    return got


async def wait_patches(observer, count: int, after: int) -> list[dict]:
    """The next ``count`` live patches an observer sees after seq ``after`` (one per program
    a build is for); earlier ones were for edits made before."""
    got: list[dict] = []
    while len(got) < count:
        events = await collect_until(observer, lambda e: ready(e) and e["seq"] > after, timeout=90)
        assert not any(e["type"] == "build-failed" and e["seq"] > after for e in events), events
        got.append(events[-1])
    return got


async def wait_serving(observer, build_id: str | None) -> None:
    """Until the daemon has noticed a capture and serves the binary with ``build_id``."""
    with anyio.fail_after(30):
        while True:
            status = await observer.request({"type": "status"})
            if any(p["build_id"] == build_id for w in status["workspaces"] for p in w.get("programs", [])):
                return
            await anyio.sleep(0.2)


async def drain(client) -> None:
    """Drop what already reached ``client`` (patches for earlier edits)."""
    await patches_within(client, 0.3)


@pytest.mark.asyncio
async def test_each_program_gets_only_its_own_patches(workspace, daemon, start):
    alpha = start(workspace / "target" / "debug" / "alpha")
    beta = start(workspace / "target" / "debug" / "beta")
    async with connect(daemon.socket_path) as observer, connect(daemon.socket_path) as to_alpha, \
            connect(daemon.socket_path) as to_beta:
        await observer.subscribe(str(workspace))
        assert (await to_alpha.subscribe(pid=alpha.pid))["build_id"] == read_build_id(alpha.binary)
        assert (await to_beta.subscribe(pid=beta.pid))["build_id"] == read_build_id(beta.binary)
        mark = await quiet_mark(observer, workspace)
        await drain(to_alpha)
        await drain(to_beta)

        edit(workspace / "alpha/src/main.rs", "alpha v1", "alpha v2")
        [patch] = await wait_patches(observer, 1, mark)
        assert patch["program"]["name"] == "alpha"
        assert patch["for_build_id"] == read_build_id(alpha.binary)
        assert patch["subscribers"] == 1
        assert [p["id"] for p in await patches_within(to_alpha, 1.0)] == [patch["id"]]
        assert await patches_within(to_beta, 0.5) == []

        # The process reports back; observers and `status` see who applied what.
        assert (await to_alpha.request({"type": "patch-result", "id": patch["id"], "applied": True}))["type"] == "ok"
        report = (await collect_until(observer, lambda e: e["type"] == "patch-result", timeout=10))[-1]
        assert (report["pid"], report["applied"], report["program"]["name"]) == (alpha.pid, True, "alpha")
        status = await observer.request({"type": "status"})
        [ws] = [w for w in status["workspaces"] if w["workspace"] == str(workspace)]
        by_name = {p["name"]: p for p in ws["programs"]}
        assert by_name["alpha"]["last_patch"]["applied"] == [alpha.pid]
        assert by_name["beta"]["last_patch"] is None

        # A library both programs link: one patch each, each to its own process.
        mark = await quiet_mark(observer, workspace)
        edit(workspace / "shared/src/lib.rs", "shared v1", "shared v2")
        both = await wait_patches(observer, 2, mark)
        assert sorted(p["program"]["name"] for p in both) == ["alpha", "beta"]
        [for_alpha] = await patches_within(to_alpha, 1.0)
        [for_beta] = await patches_within(to_beta, 1.0)
        assert for_alpha["program"]["name"] == "alpha" and for_beta["program"]["name"] == "beta"
        assert for_alpha["for_build_id"] != for_beta["for_build_id"]


@pytest.mark.asyncio
async def test_debug_and_release_processes_each_get_their_own_patches(workspace, daemon, start):
    from daemon.cli.capture_run import run_capture

    assert (await anyio.to_thread.run_sync(lambda: run_capture(workspace, release=True))).exit_code == 0
    debug = start(workspace / "target" / "debug" / "beta")
    release = start(workspace / "target" / "release" / "beta")
    async with connect(daemon.socket_path) as observer, connect(daemon.socket_path) as to_debug, \
            connect(daemon.socket_path) as to_release:
        await observer.subscribe(str(workspace))
        await wait_serving(observer, read_build_id(release.binary))  # the daemon notices the capture itself
        await to_debug.subscribe(pid=debug.pid)
        await to_release.subscribe(pid=release.pid)
        mark = await quiet_mark(observer, workspace)
        await drain(to_debug)
        await drain(to_release)

        edit(workspace / "beta/src/main.rs", "beta v1", "beta v2")
        patches = await wait_patches(observer, 2, mark)
        assert sorted(p["program"]["scope"] for p in patches) == ["host-debug", "host-release"]
        [mine] = await patches_within(to_release, 1.0)
        assert mine["program"]["scope"] == "host-release"
        assert mine["for_build_id"] == read_build_id(release.binary)
        [theirs] = await patches_within(to_debug, 1.0)
        assert theirs["program"]["scope"] == "host-debug"


def plain_cargo_build(workspace: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"))}
    subprocess.run(["cargo", "build", "--offline", "-q"], cwd=workspace, env=env, check=True, timeout=300)


@pytest.mark.asyncio
async def test_a_binary_a_plain_cargo_build_replaced_is_refused_not_patched(workspace, daemon, start):
    await anyio.to_thread.run_sync(plain_cargo_build, workspace)
    replaced = start(workspace / "target" / "debug" / "alpha")
    async with connect(daemon.socket_path) as client:
        reply = await client.subscribe(pid=replaced.pid)
        assert reply["build_id"] == read_build_id(replaced.binary)
        [notice] = await collect_until(client, lambda e: e["type"] == "not-patchable", timeout=10)
        assert notice["reason"] == "replaced" and notice["for_pid"] == replaced.pid
        assert "plain `cargo build`" in notice["message"] and "thinpatch run" in notice["message"]
        await drain(client)
        edit(workspace / "alpha/src/main.rs", "alpha v2", "alpha v3")
        assert await patches_within(client, 3.0) == []


@pytest.mark.asyncio
async def test_a_process_of_an_earlier_capture_is_told_to_restart(workspace, daemon, start):
    from daemon.cli.capture_run import run_capture

    await anyio.to_thread.run_sync(lambda: run_capture(workspace))
    old = start(workspace / "target" / "debug" / "alpha")
    async with connect(daemon.socket_path) as observer, connect(daemon.socket_path) as to_old:
        await observer.subscribe(str(workspace))
        await wait_serving(observer, read_build_id(old.binary))
        await to_old.subscribe(pid=old.pid)
        mark = await quiet_mark(observer, workspace)
        edit(workspace / "alpha/src/main.rs", "alpha v3", "alpha v4")  # a different binary from here on
        await wait_patches(observer, 1, mark)
        await anyio.to_thread.run_sync(lambda: run_capture(workspace))
        notices = await collect_until(to_old, lambda e: e["type"] == "not-patchable", timeout=30)
        assert notices[-1]["reason"] == "old-session" and "Restart" in notices[-1]["message"]
        await drain(to_old)
        edit(workspace / "alpha/src/main.rs", "alpha v4", "alpha v5")
        assert await patches_within(to_old, 5.0) == []


def thinpatch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_thinpatch_patch_asks_which_program_and_says_which_it_built_for(workspace):
    ambiguous = thinpatch("patch", "--json", cwd=workspace)
    assert ambiguous.returncode == 2
    assert "several captured programs match" in ambiguous.stderr and "--bin NAME" in ambiguous.stderr
    chosen = thinpatch("patch", "--json", "--bin", "beta", "--release", cwd=workspace)
    assert chosen.returncode == 0, chosen.stderr
    result = json.loads(chosen.stdout)
    assert (result["program"]["name"], result["program"]["scope"]) == ("beta", "host-release")
    assert result["for_build_id"] == read_build_id(workspace / "target" / "release" / "beta")
