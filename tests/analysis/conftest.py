"""Fixtures of the change-analysis tests: the demo program's prints, compiled once per edit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from daemon.analysis.code_prints import PrintCache, Prints
from tests.analysis.rust_program import compile_objects, source


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Prints]:
    """``build(**edits)``: the merged prints of the program with those edits (compiled once)."""
    root = tmp_path_factory.mktemp("prints")
    cache = PrintCache()
    made: dict[str, Prints] = {}

    def prints(units: int = 4, **edits: str) -> Prints:
        text = source(**edits)
        key = hashlib.sha256(f"{units}\0{text}".encode()).hexdigest()[:16]
        if key not in made:
            made[key] = cache.merged(compile_objects(root / key, text, units))
        return made[key]

    return prints

