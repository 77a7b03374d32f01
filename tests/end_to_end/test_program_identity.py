"""Every patch reaches exactly the processes it was built for.

A real workspace with two bins over one shared library, captured in debug (and later
release), a real `thinpatch serve`, and the real binaries running. Each program subscribes
itself through thinpatch-client (pid and build ID), applies what it gets and reports it.
The tests also subscribe on behalf of each pid, to see exactly which patches the daemon
sends to which program, including those a program would ignore.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from daemon.binary.build_id import read_build_id
from daemon.socket.client import connect
from tests.conftest import captured_fixture_copy
from tests.support.daemon_process import collect_until, quiet_mark, save_like_an_editor

pytestmark = pytest.mark.cargo


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, capture_state_dir) -> Path:
    return captured_fixture_copy("twobins", tmp_path_factory.mktemp("program identity"))


class Running:
    """A program started from a binary, its output kept; killed at the end of the test."""

    def __init__(self, binary: Path, socket_path: Path) -> None:
        self.binary = binary
        env = {**os.environ, "THINPATCH_SOCKET": str(socket_path)}
        self.proc = subprocess.Popen(
            [str(binary)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [self.lines.put(line.rstrip("\n")) for line in self.proc.stdout], daemon=True
        ).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def prints(self, text: str, timeout: float = 30.0) -> str:
        """Wait for an output line containing ``text``: the program runs that code now."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"{self.binary.name} (pid {self.pid}) never printed {text!r}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def start(daemon):
    started: list[Running] = []

    def run(binary: Path) -> Running:
        started.append(Running(binary, daemon.socket_path))
        return started[-1]

    yield run
    for process in started:
        process.stop()


async def wait_subscribers(observer, count: int) -> None:
    """Until ``count`` clients are subscribed (the programs connect on their own)."""
    with anyio.fail_after(30):
        while (await observer.request({"type": "status"}))["daemon"]["subscribers"] < count:
            await anyio.sleep(0.1)


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


class History:
    """Every event an observer has seen, so later questions can look back at earlier ones."""

    def __init__(self, client) -> None:
        self.client = client
        self.events: list[dict] = []

    async def until(self, answer, timeout: float = 90.0):
        """Read events until ``answer(events)`` is truthy; return it."""
        from daemon.socket.protocol_schema import server_message_errors

        found = answer(self.events)  # perhaps among the events already seen
        if found:
            return found
        with anyio.fail_after(timeout):
            async for event in self.client.events():
                assert server_message_errors(event) == [], event
                self.events.append(event)
                found = answer(self.events)
                if found:
                    return found
        raise AssertionError(f"stream ended: {self.events[-5:]}")


async def wait_patches(history: History, count: int, after: int) -> list[dict]:
    """The first ``count`` live patches after seq ``after`` (one per program a build is for);
    earlier ones were for edits made before."""

    def answer(events):
        failed = [e for e in events if e["type"] == "build-failed" and e["seq"] > after]
        assert not failed, failed
        patches = [e for e in events if ready(e) and e["seq"] > after]
        return patches[:count] if len(patches) >= count else None

    return await history.until(answer)


async def reports(history: History, pids: set[int], patch_ids: set, after: int) -> dict[int, dict]:
    """The processes' own patch-result reports for ``patch_ids``, one per pid in ``pids``."""

    def answer(events):
        got = {e["pid"]: e for e in events if e["type"] == "patch-result" and e["seq"] > after and e["id"] in patch_ids}
        return got if set(got) >= pids else None

    return await history.until(answer, timeout=30)


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
    async with (
        connect(daemon.socket_path) as observer,
        connect(daemon.socket_path) as to_alpha,
        connect(daemon.socket_path) as to_beta,
    ):
        await observer.subscribe(str(workspace))
        seen = History(observer)
        assert (await to_alpha.subscribe(pid=alpha.pid))["build_id"] == read_build_id(alpha.binary)
        assert (await to_beta.subscribe(pid=beta.pid))["build_id"] == read_build_id(beta.binary)
        await wait_subscribers(observer, 5)  # and alpha and beta themselves
        mark = await quiet_mark(observer, workspace)
        await drain(to_alpha)
        await drain(to_beta)

        edit(workspace / "alpha/src/main.rs", "alpha v1", "alpha v2")
        [patch] = await wait_patches(seen, 1, mark)
        assert patch["program"]["name"] == "alpha"
        assert patch["for_build_id"] == read_build_id(alpha.binary)
        assert patch["subscribers"] == 2  # alpha itself, and this test on its behalf
        assert [p["id"] for p in await patches_within(to_alpha, 1.0)] == [patch["id"]]
        assert await patches_within(to_beta, 0.5) == []

        # alpha applied it and says so; observers and `status` see who applied what.
        report = (await reports(seen, {alpha.pid}, {patch["id"]}, mark))[alpha.pid]
        assert (report["applied"], report["program"]["name"]) == (True, "alpha")
        alpha.prints("alpha v2")
        status = await observer.request({"type": "status"})
        [ws] = [w for w in status["workspaces"] if w["workspace"] == str(workspace)]
        by_name = {p["name"]: p for p in ws["programs"]}
        assert by_name["alpha"]["last_patch"]["applied"] == [alpha.pid]
        assert by_name["beta"]["last_patch"] is None

        # A library both programs link: one patch each, each to its own process.
        mark = await quiet_mark(observer, workspace)
        edit(workspace / "shared/src/lib.rs", "shared v1", "shared v2")
        both = await wait_patches(seen, 2, mark)
        assert sorted(p["program"]["name"] for p in both) == ["alpha", "beta"]
        [for_alpha] = await patches_within(to_alpha, 1.0)
        [for_beta] = await patches_within(to_beta, 1.0)
        assert for_alpha["program"]["name"] == "alpha" and for_beta["program"]["name"] == "beta"
        assert for_alpha["for_build_id"] != for_beta["for_build_id"]
        applied = await reports(seen, {alpha.pid, beta.pid}, {p["id"] for p in both}, mark)
        assert all(r["applied"] for r in applied.values()), applied
        assert "alpha v2" in alpha.prints("shared v2")  # the library edit, and alpha's earlier one
        assert "beta v1" in beta.prints("shared v2")


@pytest.mark.asyncio
async def test_debug_and_release_processes_each_get_their_own_patches(workspace, daemon, start):
    from daemon.cli.capture_run import run_capture

    assert (await anyio.to_thread.run_sync(lambda: run_capture(workspace, release=True))).exit_code == 0
    debug = start(workspace / "target" / "debug" / "beta")
    release = start(workspace / "target" / "release" / "beta")
    async with (
        connect(daemon.socket_path) as observer,
        connect(daemon.socket_path) as to_debug,
        connect(daemon.socket_path) as to_release,
    ):
        await observer.subscribe(str(workspace))
        seen = History(observer)
        await wait_serving(observer, read_build_id(release.binary))  # the daemon notices the capture itself
        await to_debug.subscribe(pid=debug.pid)
        await to_release.subscribe(pid=release.pid)
        await wait_subscribers(observer, 5)
        mark = await quiet_mark(observer, workspace)
        await drain(to_debug)
        await drain(to_release)

        edit(workspace / "beta/src/main.rs", "beta v1", "beta v2")
        patches = await wait_patches(seen, 2, mark)
        assert sorted(p["program"]["scope"] for p in patches) == ["host-debug", "host-release"]
        [mine] = await patches_within(to_release, 1.0)
        assert mine["program"]["scope"] == "host-release"
        assert mine["for_build_id"] == read_build_id(release.binary)
        [theirs] = await patches_within(to_debug, 1.0)
        assert theirs["program"]["scope"] == "host-debug"
        applied = await reports(seen, {debug.pid, release.pid}, {p["id"] for p in patches}, mark)
        assert applied[release.pid]["program"]["scope"] == "host-release"
        assert applied[debug.pid]["program"]["scope"] == "host-debug"
        release.prints("beta v2")
        debug.prints("beta v2")


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
        await wait_patches(History(observer), 1, mark)
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
