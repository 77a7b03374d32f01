"""When `thinpatch run` starts a save's capture build early (held until the verdict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli.early_build import EarlyBuild
from daemon.cli.run_session import RunOptions, Selection, holds_early_build


def options(mode: str, restart: bool = True) -> RunOptions:
    return RunOptions(workspace=Path("/w"), selection=Selection(), program_args=[], socket_path=Path("/s"),
                      restart_on_rebuild=restart, early_builds=mode)


@pytest.mark.parametrize(("cpus", "after_restart", "held"), [(1, False, False), (1, True, True), (2, False, True)])
def test_auto_holds_one_with_a_second_cpu_or_after_a_restart(cpus, after_restart, held) -> None:
    assert holds_early_build(options("auto"), True, None, after_restart, cpus) is held


def test_always_and_never_decide_alone() -> None:
    assert holds_early_build(options("always"), True, None, False, 1)
    assert not holds_early_build(options("never"), True, None, True, 64)


@pytest.mark.asyncio
async def test_none_without_a_restart_to_do_or_while_one_waits() -> None:
    assert not holds_early_build(options("always", restart=False), True, None, True, 64)  # --no-restart
    assert not holds_early_build(options("always"), False, None, True, 64)  # the program stopped
    waiting = EarlyBuild({})
    assert not holds_early_build(options("always"), True, waiting, True, 64)
    waiting.call_off()
    assert holds_early_build(options("always"), True, waiting, True, 64)
