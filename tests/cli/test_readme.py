"""The README's two set-up commands are run exactly as written: the test command by CI
(`.ci/run`), the demo command here, in a fresh virtual environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    section = README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [next(l for l in b.splitlines() if l.strip() and not l.startswith("#")) for b in blocks]


def test_readme_opens_with_what_thinpatch_is_for():
    first_paragraph = README.split("\n\n", 2)[1]
    assert "Hot-patch running Rust programs" in first_paragraph


def test_ci_runs_the_readme_test_command():
    demo, tests = setup_commands()
    assert "thinpatch demo" in demo
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"exec {tests}" in ci


@pytest.mark.cargo
def test_readme_demo_command_works_in_a_fresh_environment(tmp_path):
    demo, _ = setup_commands()
    env_dir = tmp_path / "venv"
    # System site-packages only stand in for PyPI downloads of the dependencies;
    # thinpatch itself is installed into the new environment by the command.
    venv.create(env_dir, with_pip=True, system_site_packages=True)
    env = dict(os.environ, PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        ["bash", "-c", demo], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    installed = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import daemon, sys; print(daemon.__file__)"],
        capture_output=True, text=True, cwd=tmp_path,
    ).stdout
    assert str(env_dir) in installed, installed  # the demo ran from the fresh install
