"""A device on another network: the live test host (a real Rust program built against the
client crate) runs in a network namespace of its own, reaching the daemon only through a veth
pair, and in a mount namespace where the project's target/thinpatch, the daemon's runtime
directory and the state directory are empty: it can get a patch only as bytes over the
WebSocket. An edit runs on it; a wrong token is refused and told why."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_fixture
from tests.support.daemon_process import DaemonProcess, save_like_an_editor
from tests.support.live_host import LiveHost

APP = "app/src/main.rs"
CLIENT_CRATE = Path(__file__).parents[2] / "daemon" / "data" / "thinpatch-client" / "src"


def _namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "making network and mount namespaces needs root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


def _client_speaks_websocket() -> bool:
    return any("THINPATCH_ADDR" in p.read_text(errors="replace") for p in CLIENT_CRATE.rglob("*.rs"))


pytestmark = [
    pytest.mark.cargo,
    pytest.mark.skipif(_namespaces_unavailable() is not None, reason=str(_namespaces_unavailable())),
    pytest.mark.skipif(
        not _client_speaks_websocket(),
        reason="the client crate in this checkout does not read THINPATCH_ADDR yet (its WebSocket side is "
        "built separately); this test runs once both sides are together",
    ),
]


def run(*argv: str) -> None:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")


class Network:
    """A network namespace joined to this one by a veth pair: this side .1, the device's .2."""

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        self.name = f"tp-remote-{tag}"
        self.host_link, self.device_link = f"tprh{tag}", f"tprd{tag}"
        subnet = f"10.231.{tag % 256}"
        self.host_address, self.device_address = f"{subnet}.1", f"{subnet}.2"
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.device_link)
            run("ip", "link", "set", self.device_link, "netns", self.name)
            run("ip", "addr", "add", f"{self.host_address}/30", "dev", self.host_link)
            run("ip", "link", "set", self.host_link, "up")
            run("ip", "-n", self.name, "addr", "add", f"{self.device_address}/30", "dev", self.device_link)
            run("ip", "-n", self.name, "link", "set", self.device_link, "up")
            run("ip", "-n", self.name, "link", "set", "lo", "up")
        except RuntimeError:
            self.remove()
            raise

    def remove(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def network():
    try:
        net = Network()
    except RuntimeError as exc:
        pytest.skip(f"cannot make a network namespace here: {exc}")
    yield net
    net.remove()


@pytest.fixture(scope="module")
def captured(tmp_path_factory, capture_state_dir):
    from daemon.cli.capture_run import run_capture

    result = run_capture(copy_fixture("livehost", tmp_path_factory.mktemp("remote device")))
    assert result.exit_code == 0, result
    return result


@pytest.fixture(scope="module")
def workspace(captured) -> Path:
    return captured.workspace


@pytest.fixture(scope="module")
def daemon(workspace, network, tmp_path_factory):
    sock_dir = tmp_path_factory.mktemp("daemon run")
    os.chmod(sock_dir, 0o700)
    d = DaemonProcess(sock_dir / "thinpatch.sock", [workspace], "--listen", f"{network.host_address}:0")
    d.wait_watching(workspace)
    yield d
    d.terminate()


def endpoint(daemon: DaemonProcess) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "--socket", str(daemon.socket_path)],
        capture_output=True, text=True, timeout=60,
    )
    return json.loads(out.stdout)["daemon"]["listen"]


def token_of(daemon: DaemonProcess) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "token", "--socket", str(daemon.socket_path)],
        capture_output=True, text=True, timeout=60,
    )
    return out.stdout.split()[-1]


def start_device(captured, network: Network, daemon: DaemonProcess, token: str, tmp_path: Path) -> LiveHost:
    """The live host in the device's namespaces, with only THINPATCH_ADDR and THINPATCH_TOKEN."""
    hidden = [captured.capture_root, daemon.socket_path.parent, Path(os.environ["THINPATCH_STATE_DIR"])]
    if os.environ.get("XDG_RUNTIME_DIR"):
        hidden.append(Path(os.environ["XDG_RUNTIME_DIR"]))
    mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(d))}" for d in hidden)
    (binary,) = captured.binaries
    script = tmp_path / "device.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"exec env -u THINPATCH_SOCKET THINPATCH_ADDR={shlex.quote(endpoint(daemon))} "
        f"THINPATCH_TOKEN={shlex.quote(token)} "
        f"THINPATCH_CACHE_DIR={shlex.quote(str(tmp_path / 'device patches'))} "
        f"ip netns exec {network.name} unshare --mount --propagation private "
        f"sh -c {shlex.quote(f'{mounts} && exec {shlex.quote(str(binary))}')}\n"
    )
    script.chmod(0o700)
    return LiveHost(script, cwd=captured.workspace)


def test_an_edit_runs_on_the_device(captured, workspace, network, daemon, tmp_path) -> None:
    device = start_device(captured, network, daemon, token_of(daemon), tmp_path)
    source = workspace / APP
    original = source.read_text()
    try:
        device.send("connect")
        device.expect(lambda line: line == "SUBSCRIBED", timeout=30)
        assert device.tick()["app"].startswith("app v1 ")
        save_like_an_editor(source, original.replace('"app v1 #{} calls={}"', '"app REMOTE #{} calls={}"'))
        device.expect(lambda line: line.startswith("PATCHED"), timeout=120)
        assert device.tick()["app"].startswith("app REMOTE ")
        # It loaded its own copy of the bytes, in the directory it was given.
        assert [p.suffix for p in (tmp_path / "device patches").iterdir()] == [".so"]
    finally:
        device.close()
        save_like_an_editor(source, original)


def test_a_wrong_token_is_refused_and_the_device_is_told_why(captured, network, daemon, tmp_path) -> None:
    device = start_device(captured, network, daemon, "0" * 64, tmp_path)
    try:
        device.send("connect")
        refused = device.expect(lambda line: line.startswith(("SUBSCRIBE-ERROR", "SUBSCRIBED")), timeout=30)
        assert refused.startswith("SUBSCRIBE-ERROR") and "wrong token" in refused and "thinpatch token" in refused
    finally:
        device.close()
