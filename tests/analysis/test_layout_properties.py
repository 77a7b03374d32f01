"""Edits of function bodies alone never report a layout change; and the words for each kind
of change, on layouts built by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.analysis.layout import (
    Field,
    Layout,
    LayoutTable,
    LayoutUnknown,
    Variant,
    describe_change,
    layout_changes,
    layout_check,
    type_layouts,
)
from tests.support.rust_objects import build_rlib, function_symbol, objects

BODY = """
pub struct Player {{ pub x: u32, pub name: String, pub hp: i16 }}
pub enum Event {{ Hit(u32), Heal {{ amount: i16 }}, Quit }}
pub struct Wrapper<T> {{ pub v: T }}

pub fn frame(p: &mut Player, e: &Event, w: Wrapper<u64>) -> u64 {{
    let mut total = w.v + {constant};
    {statements}
    match e {{
        Event::Hit(n) => p.x += *n,
        Event::Heal {{ amount }} => p.hp += *amount,
        Event::Quit => total += {other},
    }}
    total
}}
"""

STATEMENTS = [
    "total = total.wrapping_mul(3);",
    "if p.x > 10 { total += 1; }",
    'p.name.push_str("!");',
    "let extra = Wrapper { v: p.hp }; total += extra.v as u64;",
    "for i in 0..3u64 { total ^= i; }",
    "let t = (p.x, 7u8); total += t.1 as u64;",
]


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> LayoutTable:
    source = BODY.format(constant=1, other=2, statements="")
    return type_layouts(objects(build_rlib(tmp_path_factory.mktemp("program"), "app", source)))


@settings(max_examples=5, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    constant=st.integers(min_value=0, max_value=10**6),
    other=st.integers(min_value=0, max_value=255),
    statements=st.lists(st.sampled_from(STATEMENTS), max_size=4),
)
def test_body_edits_never_change_a_layout(
    program: LayoutTable, tmp_path_factory: pytest.TempPathFactory, constant: int, other: int, statements: list[str]
) -> None:
    source = BODY.format(constant=constant, other=other, statements="\n    ".join(statements))
    patch = objects(build_rlib(tmp_path_factory.mktemp("patch"), "app", source))
    result = layout_check(program, patch, [function_symbol(patch, "app::frame")])
    assert result == [], result


def struct(name: str, size: int, *fields: tuple[str, int, str], alignment: int = 4) -> Layout:
    return Layout(name, "struct", size, alignment, tuple(sorted(Field(*f) for f in fields)))


def test_the_words_for_struct_changes() -> None:
    old = struct("app::P", 8, ("a", 0, "u32"), ("b", 4, "u32"))
    assert describe_change(old, old) == []
    assert describe_change(old, struct("app::P", 8, ("a", 4, "u32"), ("b", 0, "u32"))) == [
        "fields reordered (`a` 0 → 4, `b` 4 → 0)"
    ]
    assert describe_change(old, struct("app::P", 4, ("a", 0, "u32"))) == ["size 8 → 4 bytes", "field `b` removed"]
    assert describe_change(old, struct("app::P", 16, ("a", 0, "u32"), ("b", 8, "u64"), alignment=8)) == [
        "size 8 → 16 bytes",
        "alignment 4 → 8",
        "field `b` retyped u32 → u64",
        "field moved (`b` 4 → 8)",
    ]


def test_the_words_for_enum_changes() -> None:
    def shape(*variants: Variant, tag: str = "u8") -> Layout:
        return Layout("app::Shape", "enum", 8, 4, (), Field("", 0, tag), tuple(sorted(variants)))

    circle = Variant("Circle", 0, (Field("__0", 4, "f32"),))
    empty = Variant("Empty", 1, ())
    old = shape(circle, empty)
    assert describe_change(old, shape(circle)) == ["variant `Empty` removed"]
    assert describe_change(old, shape(circle, Variant("Empty", 2, ()))) == ["variant `Empty` discriminant 1 → 2"]
    assert describe_change(old, shape(circle, empty, tag="u32")) == ["discriminant u8 at 0 → u32 at 0"]
    assert describe_change(old, shape(Variant("Circle", None, (Field("__0", 4, "f64"),)), empty)) == [
        "variant `Circle` discriminant 0 → untagged",
        "variant `Circle`: field `__0` retyped f32 → f64",
    ]


def test_new_types_are_not_changes_and_missing_ones_are_not_compared() -> None:
    old = {"app::P": struct("app::P", 4, ("a", 0, "u32"))}
    new = {"app::Q": struct("app::Q", 4, ("a", 0, "u32"))}
    assert layout_changes(old, new, ["app::P", "app::Q"]) == []
    changed = {"app::P": struct("app::P", 8, ("a", 0, "u64"), alignment=8)}
    [change] = layout_changes(old, changed, ["app::P"])
    assert change.why == "app::P: size 4 → 8 bytes; alignment 4 → 8; field `a` retyped u32 → u64"
    assert layout_changes(old, changed, ["app::Q"]) == []


def test_layouts_survive_json() -> None:
    layout = Layout(
        "app::Shape",
        "enum",
        8,
        4,
        (Field("f", 0, "u8"),),
        Field("", 0, "u8"),
        (Variant("A", None, (Field("__0", 4, "u32"),)),),
        (),
    )
    table = LayoutTable({layout.name: layout}, without_debug_info=["x.o"])
    back = LayoutTable.from_json(table.to_json())
    assert back.layouts == table.layouts and back.without_debug_info == ("x.o",)
    enum = Layout("app::Mode", "c-enum", 1, 1, enumerators=(("A", -1), ("B", 2)), repr_type="i8")
    assert Layout.from_json(enum.to_json()) == enum


def test_a_program_table_without_any_layout_is_unknown(tmp_path: Path) -> None:
    patch = objects(build_rlib(tmp_path, "app", BODY.format(constant=1, other=2, statements="")))
    result = layout_check(LayoutTable(), patch, [function_symbol(patch, "app::frame")])
    assert isinstance(result, LayoutUnknown)
