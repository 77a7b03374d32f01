"""Property-based tests of the pure plans: rustc argument editors and the patch link plan,
against generated command lines."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.build.link_plan import SELF_BINDING_DIRECTIVE, UNRESOLVED_DIRECTIVE, build_link_plan
from daemon.build.rustc_plan import (
    set_crate_type,
    set_emit_obj,
    set_incremental,
    set_json_diagnostics,
    set_out_dir,
)
from daemon.build.session_cache import OS_LINUX
from tests.support.records import link_line

# Values that never look like options.
values = st.from_regex(r"[a-z0-9_./]{1,10}", fullmatch=True)

# Arguments no editor touches, as the units rustc reads them in (an option with its value).
other_units = st.one_of(
    st.tuples(st.just("--cfg"), values.map(lambda v: f'feature="{v}"')).map(list),
    st.tuples(st.just("-L"), values.map(lambda v: f"dependency=/{v}")).map(list),
    st.tuples(st.just("--extern"), values.map(lambda v: f"dep=/{v}.rlib")).map(list),
    st.tuples(st.just("--crate-name"), values).map(list),
    st.tuples(
        st.just("-C"), st.sampled_from(["opt-level=0", "debuginfo=2", "metadata=abc", "link-arg=-Wl,-z,now"])
    ).map(list),
    st.sampled_from(["-Copt-level=1", "-Cdebuginfo=2", "--edition=2021", "-g", "--test"]).map(lambda a: [a]),
    values.map(lambda v: [f"src/{v}.rs"]),
)


def occurrences(*spellings: str):
    """One occurrence of the edited option, in any of its spellings: ``NAME VALUE``
    (a trailing space in the spelling) or ``NAME=VALUE`` / ``NAMEVALUE`` (joined)."""

    def make(spelling: str, value: str) -> list[str]:
        return [spelling.rstrip(), value] if spelling.endswith(" ") else [spelling + value]

    return st.builds(make, st.sampled_from(spellings), values)


EDITORS = {
    "crate type": (
        lambda a: set_crate_type(a, "bin"),
        occurrences("--crate-type ", "--crate-type="),
        ["--crate-type", "bin"],
    ),
    "emit obj": (lambda a: set_emit_obj(a, "/s/p.o"), occurrences("--emit ", "--emit="), ["--emit=obj=/s/p.o"]),
    "out dir": (
        lambda a: set_out_dir(a, "/s/out"),
        occurrences("--out-dir ", "--out-dir=", "-o ", "-o"),
        ["--out-dir", "/s/out"],
    ),
    "incremental": (
        lambda a: set_incremental(a, "/s/inc"),
        occurrences("-C incremental=", "-Cincremental=", "--codegen incremental=", "--codegen=incremental="),
        ["-C", "incremental=/s/inc"],
    ),
    "json diagnostics": (
        set_json_diagnostics,
        occurrences("--error-format ", "--error-format=", "--json ", "--json="),
        ["--error-format=json"],
    ),
}


def _fix_spaced(units: list[list[str]]) -> list[list[str]]:
    # "-C incremental=" with a trailing value is spelled as two arguments: "-C", "incremental=V".
    fixed = []
    for unit in units:
        if len(unit) == 1 and unit[0].startswith(("-C incremental=", "--codegen incremental=")):
            name, value = unit[0].split(" ", 1)
            fixed.append([name, value])
        else:
            fixed.append(unit)
    return fixed


def _check_editor(name: str, data) -> None:
    edit, edited, tail = EDITORS[name]
    units = data.draw(
        st.lists(st.one_of(other_units.map(lambda u: ("other", u)), edited.map(lambda u: ("edited", u))), max_size=12)
    )
    units = [(kind, _fix_spaced([u])[0]) for kind, u in units]
    args = [a for _, unit in units for a in unit]
    kept = [a for kind, unit in units if kind == "other" for a in unit]
    once = edit(args)
    # Every other argument is kept, in order; the edited option appears once, at the end.
    assert once == kept + tail, (args, once)
    # Folding again changes nothing.
    assert edit(once) == once


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_set_crate_type_folds_every_spelling_and_keeps_the_rest(data):
    _check_editor("crate type", data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_set_emit_obj_folds_every_spelling_and_keeps_the_rest(data):
    _check_editor("emit obj", data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_set_out_dir_folds_every_spelling_and_keeps_the_rest(data):
    _check_editor("out dir", data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_set_incremental_folds_every_spelling_and_keeps_the_rest(data):
    _check_editor("incremental", data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_set_json_diagnostics_folds_every_spelling_and_keeps_the_rest(data):
    _check_editor("json diagnostics", data)


# --------------------------------------------------------------------------- link plans

objects = values.map(lambda v: f"/t/{v}.rcgu.o")
archives = values.map(lambda v: f"/t/deps/lib{v}.rlib")
kept_link_args = st.one_of(
    values.map(lambda v: f"-L/{v}"),
    values.map(lambda v: f"-l{v}"),
    st.sampled_from(
        ["-Wl,--as-needed", "-Wl,-z,relro,-z,now", "-fuse-ld=lld", "-B/sysroot/gcc-ld", "-nodefaultlibs", "-m64"]
    ),
)
dropped_link_args = st.sampled_from(
    ["-pie", "-Wl,--gc-sections", "-no-pie", "-Wl,--version-script=/tmp/rustcAbCdEf/list"]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(objects, archives, kept_link_args, dropped_link_args), max_size=20),
    st.lists(values.map(lambda v: f"/s/{v}.o"), min_size=1, max_size=4, unique=True),
)
def test_link_plan_on_generated_link_lines(line, patch_objects):
    args = [*line, "-o", "/t/app"]
    plan = build_link_plan(link_line("cc", args), patch_objects, "/s/libpatch-1.so", os=OS_LINUX)
    final = list(plan.args)
    tail = ["-shared", *SELF_BINDING_DIRECTIVE[OS_LINUX], *UNRESOLVED_DIRECTIVE[OS_LINUX], "-o", "/s/libpatch-1.so"]
    assert final[-len(tail) :] == tail
    body = final[: -len(tail)]
    # The patch's objects, once each, in order, where the program's first object (or archive) was.
    assert [a for a in body if a in patch_objects] == patch_objects
    rest = [a for a in body if a not in patch_objects]
    start = body.index(patch_objects[0])
    assert body[start : start + len(patch_objects)] == patch_objects
    inputs_before = line[: next((i for i, a in enumerate(line) if _is_input(a)), len(line))]
    assert start == len([a for a in inputs_before if a in set(rest)])
    # No input or output of the program, nothing that makes an executable.
    assert not any(a.endswith((".rcgu.o", ".rlib")) for a in rest)
    assert not {"-pie", "-no-pie", "-Wl,--gc-sections", "/t/app"} & set(rest)
    assert not any("rustcAbCdEf" in a for a in rest)
    # Everything else is kept verbatim, in order.
    dropped = {"-pie", "-no-pie", "-Wl,--gc-sections"}
    assert rest == [a for a in line if not _is_input(a) and a not in dropped and "rustcAbCdEf" not in a]


def _is_input(arg: str) -> bool:
    # An object or archive is a path; an option that happens to end in ".o" (`-L/x.o`) is not.
    return not arg.startswith("-") and arg.endswith((".o", ".rlib"))
