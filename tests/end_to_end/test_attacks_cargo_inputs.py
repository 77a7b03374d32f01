"""A second user (nobody) plants what cargo reads above a victim's project, or takes over a tool
or config a capture recorded. The victim's capture, run and init refuse before cargo runs, and
a patch build refuses to replay the tool; the attacker's program never runs, and the message
names the file, its owner and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from daemon.socket.client import connect
from tests.support.daemon_process import DaemonProcess
from tests.support.other_user import nobody_ids, run_as_nobody

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root"),
    pytest.mark.cargo,
]

# argv = path, text, [mode]: writes a file as the attacker, making its directories.
WRITE = r"""
import os, sys
path, text = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path, "w") as fh:
    fh.write(text)
if len(sys.argv) > 3:
    os.chmod(path, int(sys.argv[3], 8))
"""


def plant(path: Path, text: str, mode: str | None = None) -> None:
    run_as_nobody(WRITE, str(path), text, *([mode] if mode else []))


def marker_script(marker: Path) -> str:
    return f"#!/bin/sh\nid -u > {marker}\nexit 1\n"


def thinpatch(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def victim_env(private: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "THINPATCH_SOCKET")}
    env["THINPATCH_STATE_DIR"] = str(private / "state")
    env["THINPATCH_SOCKET"] = str(private / "no-daemon.sock")
    env.update(extra)
    return env


def make_project(directory: Path) -> Path:
    (directory / "src").mkdir(parents=True, exist_ok=True)
    (directory / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n')
    (directory / "src" / "main.rs").write_text('fn main() { println!("hello"); }\n')
    return directory


def host_triple() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("host:"))


def assert_refused(out: subprocess.CompletedProcess, *parts: str) -> None:
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "refusing to build:" in out.stderr, out.stderr
    for part in parts:
        assert part in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr


NOBODY = f"nobody (uid {nobody_ids()[0]})"


# --------------------------------------------------------------------------- before cargo runs


def test_a_workspace_planted_above_the_project_is_refused_and_its_build_script_never_runs(shared, private):
    project = make_project(shared / "proj")
    marker = shared / "build-script-ran"
    plant(shared / "Cargo.toml", '[workspace]\nmembers = ["proj", "evil"]\nresolver = "2"\n')
    plant(shared / "evil" / "Cargo.toml", '[package]\nname = "evil"\nversion = "0.1.0"\nedition = "2021"\n')
    plant(shared / "evil" / "src" / "lib.rs", "")
    plant(shared / "evil" / "build.rs", f'fn main() {{ std::fs::write("{marker}", "ran").unwrap(); }}\n')
    env = victim_env(private)

    expected = (f"{shared}/Cargo.toml is owned by {NOBODY}", "as this project's workspace",
                f"Move the project out of {shared}")
    assert_refused(thinpatch("capture", "--workspace", str(project), env=env), *expected)
    assert_refused(thinpatch("run", "--workspace", str(project), env=env), *expected)
    assert_refused(thinpatch("init", "--workspace", str(project), env=env), *expected)
    assert_refused(thinpatch("restart", "--workspace", str(project), env=env), *expected)
    assert not marker.exists(), "the planted workspace member's build script ran as the victim"
    assert "thinpatch-client" not in (project / "Cargo.toml").read_text()


def test_a_config_planted_above_the_project_is_refused_and_its_compiler_never_runs(shared, private):
    project = make_project(shared / "proj")
    marker = shared / "compiler-ran"
    plant(shared / "evil-rustc", marker_script(marker), "755")
    plant(shared / ".cargo" / "config.toml", f'[build]\nrustc = "{shared}/evil-rustc"\n')
    env = victim_env(private)

    for command in ("capture", "restart"):
        out = thinpatch(command, "--workspace", str(project), env=env)
        assert_refused(out, f"{shared}/.cargo/config.toml is owned by {NOBODY}", "as configuration")
    assert not marker.exists(), f"the planted config's compiler ran as uid {marker.read_text()}"


def test_a_root_owned_config_everyone_can_write_is_refused(shared, private):
    project = make_project(shared / "proj")
    (shared / ".cargo").mkdir()
    config = shared / ".cargo" / "config.toml"
    config.write_text("[build]\njobs = 1\n")
    os.chmod(config, 0o666)

    out = thinpatch("capture", "--workspace", str(project), env=victim_env(private))
    assert_refused(out, f"{config} is writable by everyone (mode 0666)", "make it writable only by you")
    assert not (project / "target").exists(), "cargo ran"


# --------------------------------------------------------------------------- at each replay


def capture(project: Path, env: dict[str, str]) -> None:
    out = thinpatch("capture", "--workspace", str(project), env=env)
    assert out.returncode == 0, out.stderr


def patch_here(project: Path, env: dict[str, str]) -> dict:
    out = thinpatch("patch", "--json", "--no-daemon", "--workspace", str(project), env=env)
    assert "Traceback" not in out.stderr, out.stderr
    return json.loads(out.stdout)


def test_a_recorded_linker_another_user_took_over_is_not_run(shared, private):
    """The capture linked through a linker wrapper in a shared tools directory; afterwards
    the wrapper belongs to someone else, who rewrote it."""
    tools = shared / "tools"
    tools.mkdir(mode=0o755)
    linker = tools / "mycc"
    linker.write_text('#!/bin/sh\nexec cc "$@"\n')
    os.chmod(linker, 0o755)
    project = make_project(private / "proj")
    variable = f"CARGO_TARGET_{host_triple().upper().replace('-', '_')}_LINKER"
    env = victim_env(private, **{variable: str(linker)})
    capture(project, env)

    marker = shared / "linker-ran"
    os.chown(linker, *nobody_ids())
    plant(linker, marker_script(marker), "755")
    result = patch_here(project, env)
    assert result["error"] == "UntrustedTool", result
    assert f"not running the linker {linker}: {linker} is owned by {NOBODY}" in result["message"]
    assert "thinpatch capture" in result["message"]
    assert not marker.exists(), "the taken-over linker ran as the victim"


def project_with_linker_config(private: Path) -> tuple[Path, Path]:
    project = make_project(private / "proj")
    (project / ".cargo").mkdir()
    config = project / ".cargo" / "config.toml"
    config.write_text(f'[target.{host_triple()}]\nlinker = "cc"\n')
    return project, config


def test_tools_from_a_config_given_to_another_user_since_are_not_replayed(private):
    project, config = project_with_linker_config(private)
    env = victim_env(private)
    capture(project, env)

    os.chown(config, *nobody_ids())
    result = patch_here(project, env)
    assert result["error"] == "UntrustedTool", result
    assert f"the cargo config {config}" in result["message"]
    assert f"now belongs to {NOBODY}" in result["message"]
    assert "Run `thinpatch capture` again" in result["message"]


def test_tools_from_a_config_deleted_since_are_not_replayed_and_the_event_says_why(private):
    project, config = project_with_linker_config(private)
    env = victim_env(private)
    capture(project, env)
    config.unlink()

    daemon = DaemonProcess(private / "d.sock", [project], env=env)

    async def rebuild() -> list[dict]:
        seen: list[dict] = []
        async with connect(daemon.socket_path) as client:
            for _ in range(50):  # the daemon loads the capture first
                status = await client.request({"type": "status"})
                if status.get("workspaces"):
                    break
                await anyio.sleep(0.2)
            workspace = status["workspaces"][0]["workspace"]
            await client.subscribe(workspace)
            await client.request({"type": "rebuild", "workspace": workspace})
            with anyio.fail_after(120):
                async for event in client.events():
                    if event.get("replayed"):
                        continue
                    seen.append(event)
                    if event["type"] in ("patch-ready", "build-failed", "patch-rejected", "restart-required"):
                        return seen
        return seen

    try:
        events = anyio.run(rebuild)
    finally:
        daemon.terminate()
    outcome = events[-1]
    assert outcome["type"] == "build-failed", events
    assert f"the cargo config {config}" in outcome["message"] and "has been deleted since" in outcome["message"]
    assert "Run `thinpatch capture` again" in outcome["message"]
    assert "internal error" not in outcome["message"]
