"""The README's two set-up commands are run exactly as written: the test command by CI
(`.ci/run`), the demo command here, in a fresh virtual environment."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [next(line for line in b.splitlines() if line.strip() and not line.startswith("#")) for b in blocks]


def test_readme_opens_with_what_thinpatch_is_for():
    first_paragraph = README.split("\n\n", 2)[1]
    assert "Hot-patch running Rust programs" in first_paragraph


def test_ci_runs_the_readme_test_command():
    demo, tests = setup_commands()
    assert "thinpatch demo" in demo
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"exec {tests}" in ci


def test_the_install_uses_a_virtual_environment_not_the_system_python():
    # Debian's and Ubuntu's Python refuse `pip install` outside one (PEP 668).
    demo, _ = setup_commands()
    assert demo.startswith("python3 -m venv ")
    assert "pip install ." in demo and "sudo" not in demo and "--break-system-packages" not in demo


@pytest.mark.cargo
def test_readme_demo_command_works_in_a_fresh_environment(tmp_path):
    """The command as written, in a shell whose home is empty: it creates its own virtual
    environment, installs thinpatch and its dependencies there, and runs the demo."""
    demo, _ = setup_commands()
    home = tmp_path / "home"
    home.mkdir()
    real_home = Path.home()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # No virtual environment on PATH: `python3` is the interpreter a new user has.
    env["PATH"] = os.pathsep.join(
        d for d in env["PATH"].split(os.pathsep) if d and not (Path(d) / "activate").exists()
    )
    env["HOME"] = str(home)
    # The Rust toolchain stays where it is installed (rustup finds it through HOME otherwise).
    env.setdefault("RUSTUP_HOME", str(real_home / ".rustup"))
    env.setdefault("CARGO_HOME", str(real_home / ".cargo"))
    proc = subprocess.run(["bash", "-c", demo], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "All 5 steps observed" in proc.stdout
    python = home / ".venvs" / "thinpatch" / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-c", "import daemon; print(daemon.__file__)"], capture_output=True, text=True, cwd=tmp_path,
    ).stdout
    assert str(home / ".venvs" / "thinpatch") in installed, installed  # the demo ran from the fresh install
