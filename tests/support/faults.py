"""Shared pieces of the fault suite (tests/test_faults_*.py).

- A captured copy of the livehost fixture, built through a toolchain directory of our own
  (``rustc``, ``cargo`` and ``cc`` links to the real tools, the only entry on PATH), so a
  test can remove or break the compiler or linker the capture recorded, as uninstalling a
  toolchain would. Its recorded environment holds a secret-looking variable.
- ``assert_nothing_lost``: the suite's single definition of "nothing lost": the next valid
  edit produces a patch that the running host applies, and its counter keeps counting.
- Small probes of the daemon process: its RSS, its rustc children.

The fixtures built on these (``captured``, ``daemon``, ``host``, ``source``) are in
tests/end_to_end/conftest.py.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import anyio

from daemon.socket.client import connect
from tests.conftest import copy_fixture
from tests.support.daemon_process import DaemonProcess, collect_until, is_outcome, quiet_mark, save_like_an_editor
from tests.support.live_host import LiveHost

APP = "app/src/main.rs"
SECRET_NAME = "AWS_SECRET_ACCESS_KEY"
_GREETING = re.compile(r'format!\("app [^"]*#\{\} calls=\{\}", n, calls\)')

__all__ = [
    "APP",
    "CapturedCopy",
    "Toolchain",
    "assert_nothing_lost",
    "capture_copy",
    "collect_until",
    "daemon_rss_kib",
    "is_outcome",
    "outcome_of",
    "quiet_mark",
    "rustc_children",
    "save_like_an_editor",
    "set_greeting",
    "shared_capture",
    "start_daemon",
    "start_host",
]


# --------------------------------------------------------------------------- the toolchain


class Toolchain:
    """A bin directory of links to the real rustc, cargo and cc, used as the capture's PATH."""

    TOOLS: ClassVar[dict[str, str]] = {"rustc": "rustc", "cargo": "cargo", "cc": "cc"}

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        bin_dir.mkdir(parents=True)
        self.real: dict[str, str] = {}
        for name in self.TOOLS:
            self.real[name] = _real_tool(name)
            os.symlink(self.real[name], bin_dir / name)

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    def remove(self, name: str) -> None:
        self.path(name).unlink()

    def replace_with_script(self, name: str, body: str) -> None:
        """Swap the tool for a shell script (a broken or crashing tool)."""
        path = self.path(name)
        tmp = path.with_name(f".{name}.new")
        tmp.write_text("#!/bin/sh\n" + body)
        tmp.chmod(0o755)
        os.replace(tmp, path)

    def restore(self, name: str) -> None:
        path = self.path(name)
        tmp = path.with_name(f".{name}.link")
        os.symlink(self.real[name], tmp)
        os.replace(tmp, path)


def _real_tool(name: str) -> str:
    """The real binary (not a rustup proxy, which would need rustup's own setup on PATH)."""
    import subprocess

    if name in ("rustc", "cargo"):
        sysroot = subprocess.run(
            ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return str(Path(sysroot) / "bin" / name)
    found = shutil.which(name)
    assert found, f"{name} is not installed"
    return os.path.realpath(found)


@dataclass
class CapturedCopy:
    workspace: Path
    toolchain: Toolchain
    secret: str

    @property
    def capture_root(self) -> Path:
        return self.workspace / "target" / "thinpatch"

    @property
    def app_source(self) -> Path:
        return self.workspace / APP


def capture_copy(parent: Path) -> CapturedCopy:
    """Copy livehost under ``parent`` and capture it through a toolchain dir of its own."""
    from daemon.cli.capture_run import run_capture

    toolchain = Toolchain(parent / "toolchain" / "bin")
    workspace = copy_fixture("livehost", parent)
    secret = "tp-fault-" + secrets.token_hex(12)
    env = dict(os.environ)
    env["PATH"] = str(toolchain.bin_dir)
    env["RUSTC"] = str(toolchain.path("rustc"))
    env[SECRET_NAME] = secret
    result = run_capture(workspace, env=env)
    assert result.exit_code == 0, result
    record = result.captures.crate("livehost", "bin")
    assert record.rustc == str(toolchain.path("rustc")) and record.env[SECRET_NAME] == secret
    return CapturedCopy(workspace, toolchain, secret)


_shared: CapturedCopy | None = None


def shared_capture(tmp_path_factory) -> CapturedCopy:
    """One capture for every fault module whose faults leave the workspace usable."""
    global _shared
    if _shared is None:
        _shared = capture_copy(tmp_path_factory.mktemp("faults shared"))
    return _shared


# --------------------------------------------------------------------------- processes


def start_daemon(sock_dir: Path, workspace: Path, *extra: str) -> DaemonProcess:
    daemon = DaemonProcess(sock_dir / "thinpatch.sock", [workspace], *extra)
    daemon.wait_watching(workspace)  # a save made before the watch is armed is not an event
    return daemon


def start_host(workspace: Path, socket_path: Path) -> LiveHost:
    host = LiveHost(workspace / "target" / "debug" / "livehost", cwd=workspace)
    host.send(f"socket {socket_path}")
    host.expect(lambda line: line == "SUBSCRIBED")
    return host


def daemon_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def rustc_children(pid: int) -> list[int]:
    """Processes under ``pid`` whose program is a rustc (what the daemon runs for a patch)."""
    found, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        try:
            argv0 = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if os.path.basename(argv0) == b"rustc":
            found.append(child)
        todo += _children(child) if Path(f"/proc/{child}").exists() else []
    return found


def kill_first_rustc(pid: int, timeout: float = 30.0) -> int:
    """SIGKILL the first rustc the daemon starts; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in rustc_children(pid):
            os.kill(child, signal.SIGKILL)
            return child
        time.sleep(0.005)
    raise AssertionError("the daemon started no rustc")


# --------------------------------------------------------------------------- edits and outcomes


def set_greeting(path: Path, tag: str, base: str | None = None) -> str:
    """Save ``path`` with the app greeting changed to ``app <tag> #…`` (in ``base``, default
    the current text); returns the new text."""
    text = path.read_text() if base is None else base
    new, count = _GREETING.subn(f'format!("app {tag} #{{}} calls={{}}", n, calls)', text)
    assert count == 1, text
    save_like_an_editor(path, new)
    return new


def assert_nothing_lost(
    host: LiveHost, source: Path, tag: str, *, base: str | None = None, timeout: float = 60.0
) -> dict[str, str]:
    """The next valid edit produces a patch the running host applies: PATCHED, then a tick
    shows the new text, and the host's counters kept counting."""
    assert host.alive()
    before = host.tick()
    set_greeting(source, tag, base)
    deadline = time.monotonic() + timeout
    ticks = 0
    while True:
        host.expect(lambda line: line.startswith("PATCHED"), timeout=max(0.1, deadline - time.monotonic()))
        after = host.tick()
        ticks += 1
        if after["app"].startswith(f"app {tag} #"):
            break  # an older patch may still have been on its way
    assert int(after["counter"]) == int(before["counter"]) + ticks, (before, after)
    lib_before = int(before["lib"].rsplit("=", 1)[1])
    assert after["lib"] == f"lib v1 ticks={lib_before + ticks}", (before, after)
    assert host.alive()
    return after


async def outcome_of(socket_path: Path, workspace: Path, action, timeout: float = 60.0) -> list[dict]:
    """Subscribe, wait for quiet, run ``action()`` (sync, in a thread), and return the live
    events up to and including the first build outcome it caused."""
    async with connect(socket_path) as client:
        await client.subscribe(workspace=str(workspace))
        mark = await quiet_mark(client, workspace)
        await anyio.to_thread.run_sync(action)
        events = await collect_until(client, lambda e: is_outcome(e) and e["seq"] > mark, timeout)
    return [e for e in events if not e.get("replayed") and e["seq"] > mark]


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)
