"""Function and static prints on real rustc objects: what an edit changes, and what it doesn't."""

from __future__ import annotations

import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.analysis.code_prints import DATA, FUNCTION, TLS, PrintCache, changed, is_constant_data
from daemon.binary.demangle import demangle
from daemon.binary.elf_objects import read_object
from daemon.service.patcher import _is_constant_data
from tests.analysis.rust_program import compile_objects, named, source


def test_an_unchanged_program_has_no_changes(build):
    # compiled twice, in other directories: nothing about the place or the run leaks in
    base = build()
    again = build(EXTRA="// a comment on its own line changes no code")
    assert changed(base, again).changed == ()
    assert {named(base, "6helper"), named(base, "4tick")} <= set(base.digests())


def test_an_edited_body_changes_that_function_only(build):
    diff = changed(build(), build(HELPER="2"))
    assert diff.changed == (named(build(), "6helper"),)
    assert diff.kinds[diff.changed[0]] == FUNCTION
    assert diff.added == diff.removed == ()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=st.sampled_from([("HELPER", "5"), ("NEIGHBOUR", "4"), ("ONLY_MAIN", "7"), ("AREA", "9")]))
def test_neighbours_of_an_edit_keep_their_prints(build, edit):
    key, value = edit
    fragment = {"HELPER": "6helper", "NEIGHBOUR": "9neighbour", "ONLY_MAIN": "9only_main", "AREA": "4area"}[key]
    base, edited = build(), build(**{key: value})
    diff = changed(base, edited)
    assert diff.changed == (named(base, fragment),)


def test_code_that_only_moved_down_keeps_its_print(build):
    # lines added above move every panic location below (overflow checks, unwraps) to new
    # line numbers; the code is the same
    moved = build(EXTRA="\n\n// three more lines\n")
    assert changed(build(), moved).changed == ()
    # a real edit below the moved lines still shows, and only it
    edited = changed(build(), build(EXTRA="\n\n// three more lines\n", NEIGHBOUR="5"))
    assert [demangle(n) for n in edited.changed] == ["demo::neighbour"]


def test_an_edited_string_literal_changes_the_function_that_uses_it(build):
    base, edited = build(), build(LITERAL="shown again")
    diff = changed(base, edited)
    assert diff.changed == (named(base, "4show"),)


def _anonymous_names_used_by(objects, fragment: str) -> list[str]:
    found = []
    for obj in map(read_object, objects):
        for section in obj.sections:
            if section.executable and fragment in section.name:
                found += [obj.symbols[r.symbol].name for r in obj.relocations(section)]
    return [n for n in found if n.startswith(".Lanon.")]


def test_renumbered_anonymous_constants_change_nothing(tmp_path):
    # helper gains constants of its own: the constants after it are numbered anew
    # (.Lanon.<crate>.N), and the functions using them must not look changed
    base = compile_objects(tmp_path / "a", source(), units=1)
    edited = compile_objects(tmp_path / "b", source(HELPER='{ let v: Vec<&str> = vec!["x", "y"]; v.len() as u32 }'), 1)
    assert _anonymous_names_used_by(base, "4show") != _anonymous_names_used_by(edited, "4show")
    cache = PrintCache()
    old, new = cache.merged(base), cache.merged(edited)
    diff = changed(old, new)
    assert diff.changed == (named(old, "6helper"),)
    assert diff.removed == () and all("demo" not in n for n in diff.added)  # Vec's code, instantiated


def test_a_changed_static_initializer_is_detected(build):
    base = build()
    greeting = changed(base, build(GREETING="howdy"))
    assert greeting.changed == (named(base, "8GREETING"),) and greeting.kinds[greeting.changed[0]] == DATA
    count = changed(base, build(COUNT="6"))
    assert count.changed == (named(base, "5COUNT"),)


def test_thread_local_initializers_are_detected(build):
    base = build()
    lazy = changed(base, build(LAZY="42"))  # a lazy thread-local: its init function
    assert len(lazy.changed) == 1 and "4LAZY" in lazy.changed[0] and lazy.kinds[lazy.changed[0]] == FUNCTION
    fixed = changed(base, build(FIXED="8"))  # a const-initialised one: its .tdata
    assert fixed.changed and all("5FIXED" in n for n in fixed.changed)
    assert TLS in {fixed.kinds[n] for n in fixed.changed}


def test_added_and_removed_functions(build):
    edits = {"EXTRA": "#[inline(never)] pub fn fresh() -> u32 { 12 }", "MAIN": "let _ = fresh();"}
    diff = changed(build(), build(**edits))
    assert diff.added == (named(build(**edits), "5fresh"),)
    assert changed(build(**edits), build()).removed == diff.added


def test_vtables_and_constants_have_no_prints_but_statics_do(build):
    prints = build()
    printed_data = {n for n, node in prints.nodes.items() if node.printed and node.kind != FUNCTION}
    assert named(prints, "8GREETING") in printed_data and named(prints, "5COUNT") in printed_data
    assert not any(n.startswith("anon:") or not n.startswith(("_ZN", "_R")) for n in printed_data)


def test_constant_data_rule_matches_the_patchers(build):
    names = [
        "<app::Sq as app::Shape>::{{vtable}}", "app::TL::{{constant}}::{{closure}}::VAL", "app::COUNTER",
        "tracing::CALLSITE", "app::main::{{closure}}::X", "app::GREETING",
    ]
    assert [is_constant_data(n) for n in names] == [_is_constant_data(n) for n in names]


def test_unchanged_objects_are_not_parsed_again(tmp_path):
    objects = compile_objects(tmp_path / "a", source())
    cache = PrintCache()
    first = cache.merged(objects)
    assert cache.parsed == len(objects)
    assert cache.merged(objects).digests() == first.digests()
    assert cache.parsed == len(objects)  # same files: known by identity
    copies = tmp_path / "copies"
    copies.mkdir()
    for o in objects:
        shutil.copy(o, copies / o.name)  # other inodes, same bytes: known by content
    assert cache.merged(sorted(copies.iterdir())).digests() == first.digests()
    assert cache.parsed == len(objects)
    edited = compile_objects(tmp_path / "b", source(HELPER="3"))
    cache.merged(edited)
    assert len(objects) < cache.parsed < 2 * len(objects) + 1


def test_a_snapshots_objects_are_merged_once_and_not_looked_at_again(tmp_path):
    # the running program's kept objects: checked when its Baseline was made, fixed after
    place = tmp_path / "kept"
    place.mkdir()
    for o in compile_objects(tmp_path / "a", source()):
        shutil.copy(o, place / o.name)
    objects = sorted(place.iterdir())
    cache = PrintCache()
    snapshot = object()
    first = cache.merged_snapshot(snapshot, objects)
    assert first.digests() == PrintCache().merged(objects).digests()
    shutil.rmtree(place)  # gone: only a stat or a read would notice
    assert cache.merged_snapshot(snapshot, objects) is first
    place.mkdir()
    edited = compile_objects(tmp_path / "b", source(HELPER="3"))
    for o, path in zip(edited, objects, strict=True):
        shutil.copy(o, path)  # a new capture's objects under the same names
    again = cache.merged_snapshot(object(), objects)  # a new snapshot: its files are read
    assert again.digests() == PrintCache().merged(edited).digests()
    assert changed(first, again).changed == (named(again, "6helper"),)


def test_less_debug_info_changes_unoptimised_code(tmp_path):
    # why a patch must be compiled with the capture's debug info to be compared with it
    full = PrintCache().merged(compile_objects(tmp_path / "full", source()))
    limited = PrintCache().merged(compile_objects(tmp_path / "limited", source(), extra=("-C", "debuginfo=limited")))
    assert len(changed(full, limited).changed) > 10


def test_an_object_equal_to_an_rlib_member_is_not_printed_again(tmp_path):
    # a library patch's objects are, unit by unit, byte for byte the program's rlib members
    from daemon.binary.elf_objects import archive_members
    from tests.support.rust_objects import build_rlib

    rlib = build_rlib(tmp_path / "lib", "app", "pub fn f(x: u32) -> u32 { x + 1 }\npub fn g() -> u8 { 3 }\n")
    cache = PrintCache()
    members = cache.prints(rlib)
    name, body = next((n, b) for n, b in archive_members(rlib.read_bytes()) if n.endswith(".o"))
    loose = tmp_path / name
    loose.write_bytes(body)
    (prints,) = cache.prints(loose)
    assert any(prints is member for member in members)  # the member's prints, not made again
    assert PrintCache().merged([loose]).digests() == cache.merged([loose]).digests()
