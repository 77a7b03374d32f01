"""Prints taken over from an earlier build of a unit: the same answers as printing everything.

Each test compiles the demo program as one codegen unit (one object, the same unit name in
every build), prints it, then prints an edited build with the same ``PrintCache``: the edited
build is compared section by section with the first one and only what changed is printed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from daemon.analysis.code_prints import PrintCache, Prints, changed, object_prints
from daemon.analysis.unchanged_sections import UnchangedSections, unit_key
from daemon.binary.demangle import demangle
from daemon.binary.elf_objects import STT_FUNC, ElfObject, ObjSymbol, parse_object, read_object
from tests.analysis.rust_program import compile_objects, named, source

PICK = "#[inline(never)] pub fn pick(x: u32) -> u32 { @CALLEE@(x) }"


def _one_unit(directory: Path, **edits: str) -> Path:
    extra = edits.pop("EXTRA", "")
    callee = edits.pop("CALLEE", None)
    if callee is not None:
        extra += PICK.replace("@CALLEE@", callee)
        edits["MAIN"] = "let _ = pick(4);"
    (found,) = compile_objects(directory, source(EXTRA=extra, **edits), units=1)
    return found


def _full(path: Path) -> Prints:
    """Everything printed afresh: no earlier build."""
    return PrintCache().merged([path])


def _after(earlier: Path, path: Path) -> tuple[Prints, int]:
    """Printed with ``earlier`` known to the cache: what could be taken over, was."""
    cache = PrintCache(keep_bytes=0)  # the demo's object is small: kept all the same
    cache.merged([earlier])
    (prints,) = cache.prints(path)
    return cache.merged([path]), prints.reused


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _one_unit(tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ({"HELPER": "2"}, "6helper"),  # a body
        ({"LITERAL": "shown again"}, "4show"),  # the same code, another string it points at
        ({"GREETING": "howdy"}, "8GREETING"),  # a static's initial value
        ({"DISPLAY": "Q"}, "demo..P$u20$as"),  # a format string inside a constant the function points at
    ],
)
def test_an_edit_is_found_and_the_rest_taken_over(tmp_path, base, edit, fragment):
    edited = _one_unit(tmp_path, **edit)
    assert unit_key(str(edited)) == unit_key(str(base))
    prints, reused = _after(base, edited)
    assert reused > 10  # most of the unit was not printed again
    full = _full(edited)
    assert prints.digests() == full.digests()  # and nothing differs from printing it all
    assert {n: node.relocations for n, node in prints.nodes.items()} == {
        n: node.relocations for n, node in full.nodes.items() if n in prints.nodes
    }
    diff = changed(_full(base), prints)
    assert diff.changed == (named(full, fragment),)


@pytest.mark.parametrize("edit", [{"HELPER": "2"}, {"GREETING": "howdy"}, {"DISPLAY": "Q"}])
def test_equal_symbol_tables_take_the_shortcut_with_the_general_answers(tmp_path, base, edit):
    # rustc rewrote the unit for a body, a static or a constant: the symbols stay byte for byte
    earlier, now = read_object(base), read_object(_one_unit(tmp_path, **edit))
    quick, general = UnchangedSections(earlier, now), UnchangedSections(earlier, now, shortcut=False)
    assert quick.tables_equal and not general.tables_equal
    answers = [quick.same(s.index) for s in now.sections]
    assert answers == [general.same(s.index) for s in now.sections]
    assert 10 < sum(answers) < len(answers)  # some sections changed, most did not


def test_an_earlier_builds_symbols_are_taken_over_only_where_the_tables_match(tmp_path, base):
    earlier = read_object(base)
    made = earlier.made_of_symbols(tuple)  # anything made of the symbols alone goes with them
    for edit, taken in (({"HELPER": "2"}, True), ({"LITERAL": "shown again"}, False)):  # a longer string
        path = _one_unit(tmp_path / str(taken), **edit)
        parsed = parse_object(path.read_bytes(), str(path), like=earlier)
        assert (parsed.symbols is earlier.symbols) == taken
        assert (parsed.made_of_symbols(tuple) is made) == taken
        assert parsed.made_of_symbols(tuple) == tuple(parsed.symbols)
        assert parsed.symbols == read_object(path).symbols
        assert parsed.sections == read_object(path).sections


def test_a_call_to_another_function_is_a_change_though_the_bytes_are_equal(tmp_path):
    # pick() calls helper or neighbour: the same instruction bytes, only the relocation's
    # target symbol differs
    first = _one_unit(tmp_path / "a", CALLEE="helper")
    second = _one_unit(tmp_path / "b", CALLEE="neighbour")
    a, b = read_object(first), read_object(second)
    pick = [s for s in b.symbols if s.type == STT_FUNC and "4pick" in s.name]
    assert len(pick) == 1
    before = a.section_named(b.sections[pick[0].section].name)
    assert before is not None and a.section_data(before) == b.section_data(b.sections[pick[0].section])
    assert not UnchangedSections(a, b).same(pick[0].section)
    prints, _ = _after(first, second)
    assert changed(_full(first), prints).changed == (named(prints, "4pick"),)


def test_a_section_edited_in_place_is_not_taken_over(tmp_path, base):
    # the same unit name, the same symbols, one function's bytes changed on disk afterwards
    obj = read_object(base)
    helper = next(s for s in obj.symbols if s.type == STT_FUNC and "6helper" in s.name)
    section = obj.sections[helper.section]
    data = bytearray(obj.data)
    data[section.offset] ^= 0xFF
    tampered = parse_object(bytes(data), str(tmp_path / base.name))
    assert UnchangedSections(obj, tampered).tables_equal  # the shortcut, and still not the same
    assert not UnchangedSections(obj, tampered).same(helper.section)
    earlier = (obj, object_prints(obj))
    again = object_prints(tampered, earlier).nodes[helper.name].digest
    assert again != earlier[1].nodes[helper.name].digest
    assert again == object_prints(tampered).nodes[helper.name].digest


def test_a_file_rewritten_in_place_is_printed_again(tmp_path, base):
    edited = _one_unit(tmp_path / "edited", HELPER="2")
    place = tmp_path / "unit.o"
    shutil.copy(base, place)
    cache = PrintCache(keep_bytes=0)
    before = cache.merged([place])
    shutil.copy(edited, place)  # same path, new bytes: neither the identity nor the content matches
    after = cache.merged([place])
    assert changed(before, after).changed == (named(after, "6helper"),)
    assert after.digests() == _full(edited).digests()
    assert len(cache.objects(place)) == 1 and cache.objects(place)[0].data == edited.read_bytes()


def test_only_large_objects_stay_parsed(tmp_path, base):
    edited = _one_unit(tmp_path, HELPER="2")
    size = base.stat().st_size
    small = PrintCache(keep_bytes=size + 1)
    small.merged([base])
    (prints,) = small.prints(edited)
    assert prints.reused == 0  # printed whole: the earlier build was not kept
    assert small.merged([edited]).digests() == _full(edited).digests()


def test_unit_keys():
    assert unit_key("/t/app-1a2b.3cgu4xyz.0sess1.rcgu.o") == "app-1a2b.3cgu4xyz"
    assert unit_key("/t/libstore-9f.rlib(store-9f.0abc.12mk53n.rcgu.o)") == "store-9f.0abc"
    assert unit_key("/t/demo.o") == "demo.o"
    # without incremental compilation: no session tag, one name per unit
    assert unit_key("/t/libapp.rlib(libapp.app.f7fe3a13ec1f8119-cgu.0.rcgu.o)") == "libapp.app.f7fe3a13ec1f8119-cgu.0"
    assert unit_key("/t/out/demo.demo.1c2d-cgu.3.rcgu.o") == "demo.demo.1c2d-cgu.3"


# A function that can panic three ways (an index, an ``expect``, an ``unwrap``): each panic
# points at a ``core::panic::Location`` constant holding its file, line and column.
PANICS = (
    '#[inline(never)] pub fn first(v: &[u32], s: &str) -> u32 {{\n'
    '    v[{index}] + s.parse::<u32>().expect("{message}") + {callee}(v.iter().copied().max().unwrap())\n'
    '}}\n'
)
CALL_FIRST = 'let _ = first(&[1, 2], "3");'
MOVED = "\n// two lines added above: every panic below moves to another line\n"


def _panics(directory: Path, above: str = "", **edits: str) -> Path:
    parts = {"index": "1", "message": "not a number", "callee": "helper"}
    return _one_unit(directory, EXTRA=above + PANICS.format(**{**parts, **edits}), MAIN=CALL_FIRST)


def _functions(obj: ElfObject) -> list[ObjSymbol]:
    return [s for s in obj.symbols if s.type == STT_FUNC and s.defined]


def _bytes_of(obj: ElfObject, name: str) -> bytes | None:
    section = obj.section_named(name)
    return obj.section_data(section) if section is not None else None


def test_code_that_only_moved_to_other_lines_is_taken_over(tmp_path):
    base, moved = _panics(tmp_path / "base"), _panics(tmp_path / "moved", above=MOVED)
    earlier, now = read_object(base), read_object(moved)
    moved_locations = [
        s for s in now.sections
        if s.name.startswith(".data.rel.ro") and now.section_data(s) != _bytes_of(earlier, s.name)
    ]
    assert len(moved_locations) >= 3  # first()'s three panics and the overflow checks below it
    assert any("5first" in s.name for s in _functions(now))
    for shortcut in (True, False):
        sections = UnchangedSections(earlier, now, shortcut=shortcut)
        assert [s.name for s in _functions(now) if not sections.same(s.section)] == []
    prints, reused = _after(base, moved)
    full = _full(moved)
    assert reused >= len(_functions(now)) - 2  # (a name defined twice is printed again)
    assert prints.digests() == full.digests()
    assert {n: node.relocations for n, node in prints.nodes.items()} == {
        n: node.relocations for n, node in full.nodes.items() if n in prints.nodes
    }
    assert changed(_full(base), prints).changed == ()


@pytest.mark.parametrize(
    "edit", [{"message": "no number"}, {"index": "0"}, {"callee": "neighbour"}, {"message": "not a number!"}]
)
def test_an_edit_below_moved_lines_is_still_found(tmp_path, edit):
    base, edited = _panics(tmp_path / "base"), _panics(tmp_path / "edited", above=MOVED, **edit)
    earlier, now = read_object(base), read_object(edited)
    (first,) = (s for s in _functions(now) if "5first" in s.name)
    for shortcut in (True, False):
        assert not UnchangedSections(earlier, now, shortcut=shortcut).same(first.section)
    prints, _ = _after(base, edited)
    assert prints.digests() == _full(edited).digests()
    assert [demangle(n) for n in changed(_full(base), prints).changed] == ["demo::first"]


def test_a_string_edited_below_moved_lines_is_still_found(tmp_path):
    base = _panics(tmp_path / "base")
    edited = _one_unit(
        tmp_path / "edited", EXTRA=MOVED + PANICS.format(index="1", message="not a number", callee="helper"),
        MAIN=CALL_FIRST, LITERAL="shown again",
    )
    prints, _ = _after(base, edited)
    assert [demangle(n) for n in changed(_full(base), prints).changed] == ["demo::show"]


SHAPED = '#[inline(never)] pub fn shaped() -> &\'static (&\'static str, u32, u32) {{ &("{name}", {line}, 7) }}\n'


@pytest.mark.parametrize("name", ["main", "src/main.r"])
def test_a_constant_shaped_like_a_panic_location_keeps_every_byte_in_its_print(tmp_path, name):
    # 24 bytes: a string and two numbers, as a Location, but no Rust source file's name
    def build(directory: Path, line: str) -> Path:
        return _one_unit(directory, EXTRA=SHAPED.format(name=name, line=line), MAIN="let _ = shaped();")

    base, edited = build(tmp_path / "base", "3"), build(tmp_path / "edited", "4")
    prints, _ = _after(base, edited)
    assert [demangle(n) for n in changed(_full(base), prints).changed] == ["demo::shaped"]
    assert [demangle(n) for n in changed(_full(base), _full(edited)).changed] == ["demo::shaped"]


def test_a_static_shaped_like_a_panic_location_is_compared_whole(tmp_path):
    # a named static is printed with every byte, whatever it holds: even a Rust file's name
    def build(directory: Path, line: str) -> Path:
        static = f'pub static AT: (&str, u32, u32) = ("src/main.rs", {line}, 7);\n'
        return _one_unit(directory, EXTRA=static, MAIN="let _ = std::hint::black_box(&AT);")

    base, edited = build(tmp_path / "base", "3"), build(tmp_path / "edited", "4")
    prints, _ = _after(base, edited)
    assert [demangle(n) for n in changed(_full(base), prints).changed] == ["demo::AT"]


def test_symbols_added_to_the_table_leave_the_rest_comparable(tmp_path, base):
    # helper now prints: its new constants are added to the symbol table, and every symbol
    # after them has another index in the edited build
    edited = _one_unit(tmp_path, HELPER='{ println!("{}", x); 1 }')
    earlier, now = read_object(base), read_object(edited)
    assert len(now.symbols) > len(earlier.symbols)
    sections = UnchangedSections(earlier, now)
    kept = {s.name for s in earlier.symbols}
    functions = [s for s in _functions(now) if s.name in kept]
    assert sum(sections.same(s.section) for s in functions) > 0.7 * len(functions)
    prints, _ = _after(base, edited)
    full = _full(edited)
    assert prints.digests() == full.digests()
    assert {n: node.relocations for n, node in prints.nodes.items()} == {
        n: node.relocations for n, node in full.nodes.items() if n in prints.nodes
    }
    assert changed(_full(base), prints).changed == (named(full, "6helper"),)


@pytest.mark.parametrize("shortcut", [True, False])
def test_a_relocation_to_another_place_in_the_same_data_is_a_change(tmp_path, shortcut):
    # AT points into TABLE: the same bytes and symbols, only the relocation's addend differs
    def build(directory: Path, index: str) -> Path:
        statics = f"pub static TABLE: [u32; 4] = [1, 2, 3, 4];\npub static AT: &u32 = &TABLE[{index}];\n"
        return _one_unit(directory, EXTRA=statics, MAIN="let _ = std::hint::black_box(*AT);")

    earlier, now = read_object(build(tmp_path / "a", "1")), read_object(build(tmp_path / "b", "2"))
    (at,) = (s for s in now.symbols if s.name.startswith("_ZN4demo2AT"))
    assert not UnchangedSections(earlier, now, shortcut=shortcut).same(at.section)
