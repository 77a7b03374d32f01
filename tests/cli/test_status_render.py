"""`thinpatch status` in plain words: a status reply recorded from a real session
(tests/cli/fixtures/status-served.json), and replies shaped like it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from daemon.cli.commands.status import render_status

REPLY = json.loads((Path(__file__).parent / "fixtures" / "status-served.json").read_text())


def test_no_python_values_reach_the_reader():
    text = render_status(REPLY)
    assert not re.search(r"\b(True|False|None)\b", text), text
    assert "[" not in text and "{" not in text, text
    assert "_" not in "".join(re.findall(r"^\s*(\w+)", text, re.M)), "field names shown as labels"


def test_the_daemon_then_each_workspace_and_program():
    text = render_status(REPLY)
    daemon = REPLY["daemon"]
    [workspace] = REPLY["workspaces"]
    [program] = workspace["programs"]
    lines = text.splitlines()
    assert daemon["uptime_s"] < 60
    assert lines[0] == f"thinpatch daemon {daemon['version']}, pid {daemon['pid']}, up {int(daemon['uptime_s'])}s"
    assert f"  clients   {daemon['clients']} connected, {daemon['subscribers']} subscribed" in lines
    assert f"{workspace['workspace']}  (watching {workspace['watched_files']} files)" in lines
    assert "  crates    demo_app (bin)" in lines
    last = workspace["last_patch"]
    took = f"{last['timings']['total_ms']:.0f} ms"
    assert f"  builds    {workspace['builds']}, last: patched (patch {last['id']} in {took})" in lines
    assert f"  program   demo_app (host-debug), build ID {program['build_id'][:12]}" in lines
    assert any("no process of it was subscribed, nothing was patched" in line for line in lines)


def test_which_processes_applied_a_patch_and_which_failed():
    reply = copy.deepcopy(REPLY)
    program = reply["workspaces"][0]["programs"][0]
    program["last_patch"].update(
        subscribers=2, applied=[41], failed=[{"pid": 42, "message": "dlopen: undefined symbol: foo"}]
    )
    lines = render_status(reply).splitlines()
    assert "            patch 5: sent to 2 processes, applied in pid 41" in lines
    assert "            failed in pid 42: dlopen: undefined symbol: foo" in lines


def test_a_building_workspace_a_program_without_patches_and_problems():
    reply = copy.deepcopy(REPLY)
    workspace = reply["workspaces"][0]
    workspace["busy"] = True
    workspace["programs"][0]["last_patch"] = None
    workspace["notes"] = ["demo_lib is a cdylib, not a program"]
    reply["problems"] = [{"workspace": "/home/me/other", "message": "no captures in /home/me/other/target/thinpatch."}]
    lines = render_status(reply).splitlines()
    assert "/home/me/demo  (building)" in lines
    assert "            no patch yet" in lines
    assert "  note: demo_lib is a cdylib, not a program" in lines
    assert lines[-2:] == ["Not served:", "  /home/me/other: no captures in /home/me/other/target/thinpatch."]


def test_nothing_served_says_what_to_do():
    reply = {"daemon": REPLY["daemon"], "workspaces": [], "problems": []}
    assert (
        render_status(reply).splitlines()[-1]
        == "No workspace served yet: run `thinpatch capture` in a cargo workspace."
    )
