"""Which daemon may build a one-shot patch, and which event answers it (data only)."""

from __future__ import annotations

from capture.store import CrateKey
from daemon.cli.daemon_patch import outcome_for, serves
from daemon.service.programs import Program

APP = Program("/w", "host-debug", CrateKey("app", "bin"), "app", "/w/target/debug/deps/app-1", "b1d")
STATUS = {"workspaces": [{"workspace": "/w", "programs": [{"name": "app", "build_id": "b1d"}]}]}


def test_only_a_daemon_serving_this_very_binary_is_asked() -> None:
    assert serves(STATUS, "/w", "b1d")
    assert not serves(STATUS, "/w", "0ther")  # a re-capture it has not picked up, or another binary
    assert not serves(STATUS, "/elsewhere", "b1d")
    assert not serves({"workspaces": []}, "/w", "b1d")
    assert not serves(STATUS, "/w", None)


def test_the_answer_is_this_programs_next_outcome() -> None:
    mine = {"type": "patch-ready", "seq": 9, "program": {"build_id": "b1d"}}
    assert outcome_for(mine, APP, after=5)
    assert outcome_for({**mine, "type": "build-failed"}, APP, after=5)
    assert not outcome_for({**mine, "type": "build-started"}, APP, after=5)
    assert not outcome_for(mine, APP, after=9)  # from before the request
    assert not outcome_for({**mine, "replayed": True}, APP, after=5)
    assert not outcome_for({**mine, "program": {"build_id": "0ther"}}, APP, after=5)
