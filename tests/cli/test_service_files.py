"""systemd units, the launchd agent, and `thinpatch service install`."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import service_files
from daemon.cli.service_files import install_plan, render_systemd_service, systemd_quote

ROOT = Path(__file__).resolve().parents[2]
EXE = "/opt/thin patch/bin/thinpatch"


def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read_string(text)
    return parser


def test_packaged_templates_are_the_repository_files() -> None:
    assert service_files.template("thinpatch.socket") == (ROOT / "systemd/thinpatch.socket").read_text()
    assert service_files.template("thinpatch.service") == (ROOT / "systemd/thinpatch.service").read_text()
    assert (
        service_files.template("dev.thinpatch.daemon.plist")
        == (ROOT / "launchd/dev.thinpatch.daemon.plist").read_text()
    )


def test_socket_unit() -> None:
    unit = unit_sections((ROOT / "systemd/thinpatch.socket").read_text())
    assert unit["Socket"]["ListenStream"] == "%t/thinpatch/thinpatch.sock"
    assert unit["Socket"]["SocketMode"] == "0600"
    assert unit["Socket"]["DirectoryMode"] == "0700"
    assert unit["Install"]["WantedBy"] == "sockets.target"


def test_service_unit_is_type_notify() -> None:
    unit = unit_sections((ROOT / "systemd/thinpatch.service").read_text())
    assert unit["Service"]["Type"] == "notify"
    assert unit["Service"]["ExecStart"].endswith("thinpatch serve")
    assert unit["Unit"]["Requires"] == "thinpatch.socket"


def test_rendered_service_points_at_the_executable_and_records_path() -> None:
    text = render_systemd_service(service_files.template("thinpatch.service"), EXE, "/home/u/.cargo/bin:/usr/bin")
    service = unit_sections(text)["Service"]
    assert service["ExecStart"] == '"/opt/thin patch/bin/thinpatch" serve'
    assert service["Environment"] == "PATH=/home/u/.cargo/bin:/usr/bin"
    assert text.count("ExecStart=") == 1


def test_systemd_quoting() -> None:
    assert systemd_quote("/usr/bin/thinpatch") == "/usr/bin/thinpatch"
    assert systemd_quote("/a b") == '"/a b"'
    assert systemd_quote("/100%/x") == "/100%%/x"
    assert systemd_quote('/q"x') == '"/q\\"x"'


def test_launchd_plist_parses_and_keeps_alive_on_failure() -> None:
    agent = plistlib.loads((ROOT / "launchd/dev.thinpatch.daemon.plist").read_bytes())
    assert agent["Label"] == "dev.thinpatch.daemon"
    assert agent["ProgramArguments"][1:] == ["serve"]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}


def test_install_plan_for_launchd(tmp_path: Path) -> None:
    [plist] = install_plan("launchd", tmp_path, EXE, "/usr/bin:/bin")
    assert plist.path == tmp_path / "Library/LaunchAgents/dev.thinpatch.daemon.plist"
    agent = plistlib.loads(plist.content.encode())
    assert agent["ProgramArguments"] == [EXE, "serve"]
    assert agent["EnvironmentVariables"]["PATH"] == "/usr/bin:/bin"
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["StandardErrorPath"] == str(tmp_path / "Library/Logs/thinpatch.log")


def test_install_plan_for_systemd_honours_xdg_config_home(tmp_path: Path) -> None:
    files = install_plan("systemd", tmp_path, EXE, None, {"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert [f.path for f in files] == [
        tmp_path / "cfg/systemd/user/thinpatch.socket",
        tmp_path / "cfg/systemd/user/thinpatch.service",
    ]
    assert "Environment=" not in files[1].content
    with pytest.raises(ValueError, match="absolute path"):
        install_plan("systemd", tmp_path, "thinpatch", None)


def run_thinpatch(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run(
        [shutil.which("thinpatch") or "thinpatch", *args], capture_output=True, text=True, env=env, timeout=30
    )


@pytest.mark.skipif(shutil.which("thinpatch") is None, reason="the thinpatch entry point is not installed")
def test_service_install_writes_units_with_this_thinpatch(tmp_path: Path) -> None:
    dry = run_thinpatch(tmp_path, "service", "install", "--dry-run", "--manager", "systemd")
    assert dry.returncode == 0, dry.stderr
    assert "would write" in dry.stdout and not (tmp_path / ".config").exists()

    result = run_thinpatch(tmp_path, "service", "install", "--manager", "systemd")
    assert result.returncode == 0, result.stderr
    unit_dir = tmp_path / ".config/systemd/user"
    service = unit_sections((unit_dir / "thinpatch.service").read_text())["Service"]
    assert service["ExecStart"] == f"{shutil.which('thinpatch')} serve"
    assert (unit_dir / "thinpatch.socket").read_text() == (ROOT / "systemd/thinpatch.socket").read_text()
    assert "systemctl --user enable --now thinpatch.socket" in result.stdout
    again = run_thinpatch(tmp_path, "service", "install", "--manager", "systemd")
    assert again.stdout.count("unchanged") == 2

    mac = run_thinpatch(tmp_path, "service", "install", "--manager", "launchd")
    assert mac.returncode == 0, mac.stderr
    agent = plistlib.loads((tmp_path / "Library/LaunchAgents/dev.thinpatch.daemon.plist").read_bytes())
    assert agent["ProgramArguments"] == [shutil.which("thinpatch"), "serve"]
    assert "launchctl bootstrap gui/" in mac.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd units are Linux-only")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    executable = shutil.which("thinpatch") or sys.executable  # verify checks it is executable
    files = install_plan("systemd", tmp_path, executable, "/usr/bin:/bin", {"XDG_CONFIG_HOME": str(tmp_path)})
    service_files.write_files(files)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        ["systemd-analyze", "--user", "verify", *(str(f.path) for f in files)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # verify only warns about unknown keys and bad values: treat any remark on our files as a failure
    remarks = [line for line in result.stderr.splitlines() if "thinpatch." in line]
    assert remarks == [], remarks


# --------------------------------------------------------------------------- uninstall


def test_uninstall_plan_removes_our_units_and_the_links_enabling_them(tmp_path: Path) -> None:
    unit_dir = tmp_path / "cfg/systemd/user"
    existing = [
        unit_dir / "thinpatch.socket",
        unit_dir / "thinpatch.service",
        unit_dir / "sockets.target.wants/thinpatch.socket",
        unit_dir / "default.target.wants/thinpatch.service",
        unit_dir / "other.service",
        unit_dir / "sockets.target.wants/other.socket",
    ]
    plan = service_files.uninstall_plan("systemd", tmp_path, {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}, existing)
    assert plan.files == existing[:2] + sorted(existing[2:4])
    assert ["systemctl", "--user", "stop", "thinpatch.socket", "thinpatch.service"] in plan.stop
    assert plan.reload == [["systemctl", "--user", "daemon-reload"]]
    # Only what exists is listed: a half-removed install is finished, not an error.
    assert service_files.uninstall_plan("systemd", tmp_path, {}, []).files == []


def test_uninstall_plan_for_launchd_boots_the_agent_out(tmp_path: Path) -> None:
    plist = tmp_path / "Library/LaunchAgents/dev.thinpatch.daemon.plist"
    plan = service_files.uninstall_plan("launchd", tmp_path, {}, [plist])
    assert plan.files == [plist]
    assert plan.stop == [["launchctl", "bootout", f"gui/{os.getuid()}/dev.thinpatch.daemon"]]


@pytest.mark.skipif(shutil.which("thinpatch") is None, reason="the thinpatch entry point is not installed")
@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl is not installed")
def test_service_uninstall_undoes_install_and_enable(tmp_path: Path) -> None:
    assert run_thinpatch(tmp_path, "service", "install", "--manager", "systemd").returncode == 0
    unit_dir = tmp_path / ".config/systemd/user"
    (unit_dir / "mine.service").write_text("[Service]\nExecStart=/bin/true\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("XDG_CONFIG_HOME", None)
    # `enable` only writes links: it works without a running user manager.
    enabled = subprocess.run(
        ["systemctl", "--user", "enable", "thinpatch.socket"], env=env, capture_output=True, text=True, timeout=30
    )
    assert enabled.returncode == 0, enabled.stderr
    assert (unit_dir / "sockets.target.wants/thinpatch.socket").is_symlink()

    dry = run_thinpatch(tmp_path, "service", "uninstall", "--dry-run", "--manager", "systemd")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove {unit_dir / 'thinpatch.service'}" in dry.stdout
    assert (unit_dir / "thinpatch.service").exists()

    result = run_thinpatch(tmp_path, "service", "uninstall", "--manager", "systemd")
    assert result.returncode == 0, result.stderr
    assert not (unit_dir / "thinpatch.socket").exists() and not (unit_dir / "thinpatch.service").exists()
    assert not (unit_dir / "sockets.target.wants/thinpatch.socket").is_symlink()
    assert (unit_dir / "mine.service").exists()  # only ours
    assert "Traceback" not in result.stderr
    again = run_thinpatch(tmp_path, "service", "uninstall", "--manager", "systemd")
    assert again.returncode == 0 and again.stdout.startswith("nothing to remove")


@pytest.mark.skipif(shutil.which("thinpatch") is None, reason="the thinpatch entry point is not installed")
def test_service_uninstall_removes_the_launchd_agent(tmp_path: Path) -> None:
    assert run_thinpatch(tmp_path, "service", "install", "--manager", "launchd").returncode == 0
    plist = tmp_path / "Library/LaunchAgents/dev.thinpatch.daemon.plist"
    assert plist.exists()
    result = run_thinpatch(tmp_path, "service", "uninstall", "--manager", "launchd")
    assert result.returncode == 0, result.stderr
    assert f"removed {plist}" in result.stdout and not plist.exists()
