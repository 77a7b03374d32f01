"""The program's layouts read per unit: they decide when they can, and the whole table otherwise."""

from __future__ import annotations

from pathlib import Path

from daemon.analysis.layout import LayoutTable, LayoutUnknown, check_functions
from daemon.analysis.program_types import ProgramTypes
from daemon.analysis.unchanged_sections import unit_key
from tests.support.rust_objects import build_rlib, function_symbol, objects

PLAYER = """
pub struct Player {{ {fields} }}
pub fn frame(p: &Player) -> u32 {{ p.x + 1 }}
"""
BEFORE = PLAYER.format(fields="pub x: u32, pub y: u32")


class Counted:
    """``ProgramTypes.complete``, counting the calls."""

    def __init__(self, types: ProgramTypes) -> None:
        self.types, self.calls = types, 0

    def __call__(self) -> LayoutTable:
        self.calls += 1
        return self.types.complete()


def _check(tmp_path: Path, new_source: str) -> tuple[object, int, LayoutTable]:
    program = build_rlib(tmp_path / "old", "app", BEFORE)
    patch = objects(build_rlib(tmp_path / "new", "app", new_source))
    types = ProgramTypes([program], tmp_path / "layouts")
    complete = Counted(types)
    symbol = function_symbol(patch, "app::frame")
    defining = [o for o in patch if any(s.name == symbol and s.defined for s in o.symbols)]
    part = types.of_units(unit_key(o.path) for o in defining)
    _, result = check_functions(part, defining, [symbol], complete=complete)
    assert not isinstance(result, LayoutUnknown), result
    return result, complete.calls, part


def test_an_unchanged_type_is_decided_by_its_unit_alone(tmp_path):
    result, calls, part = _check(tmp_path, BEFORE.replace("p.x + 1", "p.x + 2"))
    assert result == [] and calls == 0
    assert "app::Player" in part
    assert not (tmp_path / "layouts").exists()  # the whole table was neither read nor written


def test_a_changed_layout_is_confirmed_with_the_whole_table(tmp_path):
    result, calls, _ = _check(tmp_path, PLAYER.format(fields="pub x: u32, pub y: u32, pub score: u64"))
    assert calls == 1
    assert [c.type for c in result] == ["app::Player"]  # type: ignore[attr-defined]


def test_a_type_the_unit_does_not_describe_asks_the_whole_table(tmp_path):
    source = BEFORE + "pub struct Extra { pub a: u8 }\npub fn frame2(e: &Extra) -> u8 { e.a }\n"
    program = build_rlib(tmp_path / "old", "app", BEFORE)
    patch = objects(build_rlib(tmp_path / "new", "app", source.replace("p.x + 1", "p.x + 3")))
    types = ProgramTypes([program], None)
    complete = Counted(types)
    symbol = function_symbol(patch, "app::frame2")
    defining = [o for o in patch if any(s.name == symbol and s.defined for s in o.symbols)]
    _, result = check_functions(LayoutTable(), defining, [symbol], complete=complete)
    assert result == [] and complete.calls == 1  # a new type: no change, but only the whole table says so
