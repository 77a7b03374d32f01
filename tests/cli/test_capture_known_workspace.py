"""A capture build that assumes the workspace as an earlier build found it checks that beside it."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from capture import store
from daemon.cli.capture_run import capture_workspace, inspect_workspace

pytestmark = pytest.mark.cargo


@pytest.mark.asyncio
async def test_a_build_on_the_right_assumption_is_the_plain_build(fixture_copy, capture_state_dir) -> None:
    workspace = fixture_copy("single_bin")
    first = await capture_workspace(workspace)
    assert first.ok and first.info is not None
    again = await capture_workspace(workspace, known=first.info)
    assert again.ok and again.info == first.info
    assert again.captured == first.captured != [] and again.capture_root == first.capture_root
    assert again.started_at > first.started_at  # built again, records rewritten
    assert all(r.recorded_at >= again.started_at for r in again.captures.rustc.values())


@pytest.mark.asyncio
async def test_a_wrong_assumption_is_undone_and_built_as_the_workspace_is(fixture_copy, capture_state_dir) -> None:
    workspace = fixture_copy("single_bin")
    actual = await inspect_workspace(workspace.resolve(), dict(os.environ))
    elsewhere = workspace.parent / "elsewhere-target"
    wrong = replace(actual, target_dir=elsewhere)  # as if .cargo/config.toml had moved the target dir
    result = await capture_workspace(workspace, known=wrong)
    assert result.ok and result.info == actual
    assert result.capture_root == actual.target_dir / store.CAPTURE_DIRNAME and result.captured != []
    # what the build on the wrong assumption recorded there is gone again
    assert not (store.captures_dir(elsewhere / store.CAPTURE_DIRNAME) / result.scope).exists()


@pytest.mark.asyncio
async def test_run_remembers_the_workspace_for_its_first_restart_build(fixture_copy, tmp_path) -> None:
    from daemon.cli.run_session import remember_workspace

    workspace = fixture_copy("single_bin")
    inspected: dict = {}
    await remember_workspace(workspace, inspected)
    assert inspected == {workspace: await inspect_workspace(workspace.resolve(), dict(os.environ))}
    # where cargo finds no workspace, nothing is remembered and nothing is raised
    empty = tmp_path / "no workspace"
    empty.mkdir()
    nothing: dict = {}
    await remember_workspace(empty, nothing)
    assert nothing == {}
