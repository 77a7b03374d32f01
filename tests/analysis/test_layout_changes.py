"""Layout checks on real rustc output: each test compiles a small crate twice, the "running
program" and the "patch", and asks whether the patched function uses a changed type."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.analysis.layout import (
    FunctionFacts,
    LayoutChange,
    LayoutTable,
    LayoutUnknown,
    UnitDwarfMemo,
    check_functions,
    function_facts,
    layout_check,
    program_layouts,
    type_layouts,
)
from tests.support.rust_objects import build_rlib, function_symbol, objects


def check(tmp_path: Path, old_source: str, new_source: str, function: str = "app::frame") -> list[LayoutChange]:
    old = type_layouts(objects(build_rlib(tmp_path / "old", "app", old_source)))
    patch = objects(build_rlib(tmp_path / "new", "app", new_source))
    result = layout_check(old, patch, [function_symbol(patch, function)])
    assert not isinstance(result, LayoutUnknown), result
    return result


def whys(changes: list[LayoutChange]) -> list[str]:
    return [c.why for c in changes]


PLAYER = """
pub struct Player {{ {fields} }}
pub fn frame(p: &Player) -> u32 {{ p.x + 1 }}
"""


def test_a_field_added_to_a_type_used_through_a_reference(tmp_path: Path) -> None:
    changes = check(
        tmp_path,
        PLAYER.format(fields="pub x: u32, pub y: u32"),
        PLAYER.format(fields="pub x: u32, pub y: u32, pub score: u64"),
    )
    assert [c.type for c in changes] == ["app::Player"]
    assert changes[0].why.startswith("app::Player: size 8 → 16 bytes; alignment 4 → 8; field `score` added")


def test_a_field_retyped(tmp_path: Path) -> None:
    changes = check(
        tmp_path,
        PLAYER.format(fields="pub x: u32, pub y: u32"),
        PLAYER.format(fields="pub x: u32, pub y: u64"),
    )
    assert "field `y` retyped u32 → u64" in changes[0].details


def test_source_order_that_rustc_lays_out_the_same_is_no_change(tmp_path: Path) -> None:
    # rustc puts the u64 first in both: the offsets by name are the same.
    assert (
        check(
            tmp_path,
            PLAYER.format(fields="pub x: u32, pub big: u64"),
            PLAYER.format(fields="pub big: u64, pub x: u32"),
        )
        == []
    )


REPR_C = """
#[repr(C)]
pub struct Header {{ {fields} }}
pub fn frame(h: Header) -> u32 {{ h.a + h.b }}
"""


def test_repr_c_fields_reordered(tmp_path: Path) -> None:
    changes = check(
        tmp_path, REPR_C.format(fields="pub a: u32, pub b: u32"), REPR_C.format(fields="pub b: u32, pub a: u32")
    )
    assert whys(changes) == ["app::Header: fields reordered (`a` 0 → 4, `b` 4 → 0)"]


def test_repr_c_field_added_in_the_middle_moves_the_next(tmp_path: Path) -> None:
    changes = check(
        tmp_path,
        REPR_C.format(fields="pub a: u32, pub b: u32"),
        REPR_C.format(fields="pub a: u32, pub pad: u32, pub b: u32"),
    )
    assert whys(changes) == ["app::Header: size 8 → 12 bytes; field `pad` added; field moved (`b` 4 → 8)"]


SHAPE = """
pub enum Shape {{ Circle(f32), Rect {{ w: u32, h: u32 }}, {extra} }}
pub fn frame(s: &Shape) -> u32 {{ match s {{ Shape::Rect {{ h, .. }} => *h, _ => 0 }} }}
"""


def test_an_enum_variant_added(tmp_path: Path) -> None:
    changes = check(tmp_path, SHAPE.format(extra="Empty"), SHAPE.format(extra="Empty, Triangle(u8, u8, u8)"))
    assert [c.type for c in changes] == ["app::Shape"]
    # rustc also narrows the tag here (u32 → u8): the layout is told in full.
    assert "variant `Triangle` added" in changes[0].details
    assert changes[0].why.startswith("app::Shape: ")


def test_an_enum_variant_field_retyped(tmp_path: Path) -> None:
    old = SHAPE.format(extra="Empty")
    changes = check(tmp_path, old, old.replace("w: u32, h: u32", "w: u64, h: u32"))
    assert changes[0].type == "app::Shape"
    assert "variant `Rect`: field `w` retyped u32 → u64" in changes[0].details


def test_c_like_enum_values(tmp_path: Path) -> None:
    source = """
#[derive(Clone, Copy)] pub enum Mode { Idle = 1, Run = 2 }
pub fn frame(m: Mode) -> u32 { m as u32 }
"""
    changes = check(tmp_path, source, source.replace("Run = 2", "Run = 7, Fly = 9"))
    assert whys(changes) == ["app::Mode: enumerator `Fly` added; enumerator `Run` = 2 → 7"]


GENERIC = """
pub struct Wrapper<T> {{ pub v: T, {extra} }}
pub fn frame(w: &Wrapper<u32>) -> u32 {{ w.v }}
pub fn other(w: &Wrapper<u64>) -> u64 {{ w.v }}
"""


def test_a_generic_struct_instantiation_changes_with_its_definition(tmp_path: Path) -> None:
    changes = check(tmp_path, GENERIC.format(extra=""), GENERIC.format(extra="pub n: u8"))
    assert whys(changes) == ["app::Wrapper<u32>: size 4 → 8 bytes; field `n` added"]


def test_instantiations_are_told_apart(tmp_path: Path) -> None:
    objs = objects(build_rlib(tmp_path, "app", GENERIC.format(extra="")))
    frame, other = function_symbol(objs, "app::frame"), function_symbol(objs, "app::other")
    facts = function_facts(objs, [frame, other])
    assert isinstance(facts[frame], FunctionFacts) and isinstance(facts[other], FunctionFacts)
    assert "app::Wrapper<u32>" in facts[frame].types and "app::Wrapper<u64>" not in facts[frame].types
    assert "app::Wrapper<u64>" in facts[other].types and "app::Wrapper<u32>" not in facts[other].types
    table = type_layouts(objs)
    assert table["app::Wrapper<u32>"].members == {"v": (0, "u32")}
    assert table["app::Wrapper<u64>"].members == {"v": (0, "u64")}


def test_a_type_from_a_dependency_crate(tmp_path: Path) -> None:
    app = """
pub fn frame(c: &dep::Config) -> u32 { c.limit + 1 }
"""
    dep_v1 = "pub struct Config { pub limit: u32 }"
    dep_v2 = "pub struct Config { pub limit: u32, pub name: String }"
    old_dep = build_rlib(tmp_path / "old", "dep", dep_v1)
    old = type_layouts(objects(build_rlib(tmp_path / "old", "app", app, externs={"dep": old_dep})))
    new_dep = build_rlib(tmp_path / "new", "dep", dep_v2)
    patch = objects(build_rlib(tmp_path / "new", "app", app, externs={"dep": new_dep}))
    frame = function_symbol(patch, "app::frame")
    facts = function_facts(patch, [frame])[frame]
    assert isinstance(facts, FunctionFacts) and "dep::Config" in facts.types
    result = layout_check(old, patch, [frame])
    assert isinstance(result, list)
    assert [c.type for c in result] == ["dep::Config"]
    assert "field `name` added" in result[0].details


def test_function_facts_declaration_and_types_of_locals_in_nested_blocks(tmp_path: Path) -> None:
    source = """
pub struct Arg { pub a: u8 }
pub struct Ret { pub r: u16 }
pub struct Inner { pub i: u32 }
pub struct Local { pub inner: Inner }
pub union Bits { pub f: f32, pub u: u32 }
pub struct Unused { pub u: u64 }

pub fn frame(arg: Arg) -> Ret {
    let mut r = Ret { r: arg.a as u16 };
    if r.r > 3 {
        let l = Local { inner: Inner { i: 5 } };
        let b = Bits { u: l.inner.i };
        r.r += unsafe { b.u } as u16;
    }
    r
}
"""
    objs = objects(build_rlib(tmp_path, "app", source))
    frame = function_symbol(objs, "app::frame")
    facts = function_facts(objs, [frame])[frame]
    assert isinstance(facts, FunctionFacts)
    assert facts.name == "app::frame"
    assert facts.file == str(tmp_path / "app.rs") and facts.line == 9
    assert {"app::Arg", "app::Ret", "app::Local", "app::Inner", "app::Bits"} <= facts.types
    assert "app::Unused" not in facts.types
    assert type_layouts(objs, ["app::Bits"])["app::Bits"].kind == "union"


def test_linkage_names_match_without_llvm_suffixes(tmp_path: Path) -> None:
    objs = objects(build_rlib(tmp_path, "app", PLAYER.format(fields="pub x: u32")))
    frame = function_symbol(objs, "app::frame")
    facts = function_facts(objs, [frame + ".llvm.12345"])
    assert isinstance(facts[frame + ".llvm.12345"], FunctionFacts)
    missing = function_facts(objs, ["_ZN3app7missing17h0000000000000000E"])
    assert isinstance(missing["_ZN3app7missing17h0000000000000000E"], LayoutUnknown)


def test_objects_without_debug_info_give_unknown_never_unchanged(tmp_path: Path) -> None:
    source = PLAYER.format(fields="pub x: u32")
    old = type_layouts(objects(build_rlib(tmp_path / "old", "app", source)))
    for level in ("0", "1", "line-tables-only"):
        patch = objects(build_rlib(tmp_path / level, "app", source.replace("+ 1", "+ 2"), debuginfo=level))
        result = layout_check(old, patch, [function_symbol(patch, "app::frame")])
        assert isinstance(result, LayoutUnknown), (level, result)
        assert "debug info" in result.why
    bare = objects(build_rlib(tmp_path / "bare", "app", source, debuginfo="0"))
    table = type_layouts(bare)
    assert len(table) == 0 and len(table.without_debug_info) == len(bare)
    patch = objects(build_rlib(tmp_path / "new", "app", source))
    result = layout_check(table, patch, [function_symbol(patch, "app::frame")])
    assert isinstance(result, LayoutUnknown)


def test_dwarf_5_reads_the_same_as_dwarf_4(tmp_path: Path) -> None:
    source = SHAPE.format(extra="Empty") + GENERIC.format(extra="pub n: u8").replace("frame", "frame2")
    four = objects(build_rlib(tmp_path / "4", "app", source, dwarf_version=4))
    five = objects(build_rlib(tmp_path / "5", "app", source, dwarf_version=5))
    assert type_layouts(four).layouts == type_layouts(five).layouts
    f4, f5 = function_symbol(four, "app::frame"), function_symbol(five, "app::frame")
    facts4, facts5 = function_facts(four, [f4])[f4], function_facts(five, [f5])[f5]
    assert isinstance(facts4, FunctionFacts) and isinstance(facts5, FunctionFacts)
    assert (facts4.name, facts4.line, facts4.types) == (facts5.name, facts5.line, facts5.types)
    assert (facts4.file, facts5.file) == (str(tmp_path / "4" / "app.rs"), str(tmp_path / "5" / "app.rs"))


def test_program_layouts_are_cached_by_the_objects_bytes(tmp_path: Path) -> None:
    rlib = build_rlib(tmp_path / "old", "app", SHAPE.format(extra="Empty"))
    cache = tmp_path / "cache"
    first = program_layouts([rlib], cache)
    written = list(cache.iterdir())
    assert len(written) == 1
    second = program_layouts([rlib], cache)
    assert second.layouts == first.layouts and "app::Shape" in second
    other = build_rlib(tmp_path / "new", "app", SHAPE.format(extra="Empty, Triangle"))
    third = program_layouts([other], cache)
    assert len(list(cache.iterdir())) == 2
    assert third["app::Shape"] != first["app::Shape"]
    written[0].write_text("not json")  # a damaged entry is rebuilt, not trusted
    assert program_layouts([rlib], cache).layouts == first.layouts
    stray = tmp_path / "notes.o"
    stray.write_text("not an object")
    assert program_layouts([rlib, stray]).without_debug_info == (str(stray),)


def test_one_name_with_two_layouts_is_ambiguous(tmp_path: Path) -> None:
    v1 = build_rlib(tmp_path / "1", "dep", "pub struct Config { pub a: u32 }")
    v2 = build_rlib(tmp_path / "2", "dep", "pub struct Config { pub a: u64 }")
    user = "pub fn frame(c: &dep::Config) -> u64 { c.a as u64 }"
    one = objects(build_rlib(tmp_path / "1", "app", user, externs={"dep": v1}))
    two = objects(build_rlib(tmp_path / "2", "app", user, externs={"dep": v2}))
    table = type_layouts(one + two)
    assert "dep::Config" not in table and len(table.ambiguous["dep::Config"]) == 2
    assert layout_check(table, two, [function_symbol(two, "app::frame")]) == []
    v3 = build_rlib(tmp_path / "3", "dep", "pub struct Config { pub a: u16 }")
    three = objects(build_rlib(tmp_path / "3", "app", user, externs={"dep": v3}))
    result = layout_check(table, three, [function_symbol(three, "app::frame")])
    assert isinstance(result, list) and [c.type for c in result] == ["dep::Config"]
    assert isinstance(LayoutTable.from_json(table.to_json()).ambiguous["dep::Config"], frozenset)


def test_two_layouts_under_one_name_in_the_patch_are_each_checked(tmp_path: Path) -> None:
    user = "pub fn frame(c: &dep::Config) -> u64 {{ c.a as u64 }}"
    both = "pub fn frame(a: &one::Config, b: &two::Config) -> u64 {{ a.a as u64 + b.a as u64 }}"
    v1 = build_rlib(tmp_path / "1", "dep", metadata="1", source="pub struct Config { pub a: u32 }")
    v2 = build_rlib(tmp_path / "2", "dep", metadata="2", source="pub struct Config { pub a: u64 }")
    v3 = build_rlib(tmp_path / "3", "dep", metadata="3", source="pub struct Config { pub a: u16 }")
    old = type_layouts(
        objects(build_rlib(tmp_path / "1", "app", user.format(), externs={"dep": v1}))
        + objects(build_rlib(tmp_path / "2", "app", user.format(), externs={"dep": v2}))
    )
    same = objects(build_rlib(tmp_path / "same", "app", both.format(), externs={"one": v1, "two": v2}))
    assert layout_check(old, same, [function_symbol(same, "app::frame")]) == []
    other = objects(build_rlib(tmp_path / "other", "app", both.format(), externs={"one": v1, "two": v3}))
    result = layout_check(old, other, [function_symbol(other, "app::frame")])
    assert isinstance(result, list)
    assert whys(result) == ["dep::Config: 1 of the 2 layouts under this name are new"]


GREETING = """
pub struct Player {{ {fields} }}
pub fn frame(p: &Player) -> String {{ format!("{text} {{}}", p.x) }}
"""


@pytest.mark.parametrize("dwarf", [4, 5])
def test_a_unit_rewritten_with_the_same_debug_info_is_read_once(tmp_path: Path, dwarf: int) -> None:
    """A changed string leaves the unit's debug info as it was but for its line numbers'
    columns: the memo answers from the earlier read, and the answers are those of a fresh
    read. A changed layout, in the same place, is read afresh and seen."""
    source = GREETING.format(fields="pub x: u32", text="hi")
    old = type_layouts(objects(build_rlib(tmp_path, "app", source, dwarf_version=dwarf)))
    memo = UnitDwarfMemo()

    def checked(fields: str, text: str) -> tuple[list[LayoutChange] | LayoutUnknown, FunctionFacts | LayoutUnknown]:
        source = GREETING.format(fields=fields, text=text)
        patch = objects(build_rlib(tmp_path, "app", source, dwarf_version=dwarf))
        frame = function_symbol(patch, "app::frame")
        facts, result = check_functions(old, patch, [frame], memo=memo)
        fresh_facts, fresh_result = check_functions(old, patch, [frame])
        assert (facts, result) == (fresh_facts, fresh_result)
        return result, facts[frame]

    assert checked("pub x: u32", "hello") == ([], checked("pub x: u32", "hello")[1])
    assert memo.reused == 1  # the first read of the unit was a fresh one; the second, the same bytes
    result, facts = checked("pub x: u32", "hello, world")
    assert result == [] and memo.reused == 2
    assert isinstance(facts, FunctionFacts) and "app::Player" in facts.types
    result, _ = checked("pub x: u32, pub y: u64", "hello, world")
    assert memo.reused == 2  # other debug info: read afresh
    assert isinstance(result, list) and [c.type for c in result] == ["app::Player"]
