"""Which workspace crates a patch rebuilds, from captured --extern arguments."""

from __future__ import annotations

import pytest

from daemon.build.crate_graph import crate_node, crates_to_rebuild, crates_to_rebuild_all, dependency_graph
from daemon.build.rustc_plan import PlanError

D = "/ws/target/debug/deps"


def rec(crate, kind, extra, externs=()):
    args = ["--crate-name", crate, "-C", f"extra-filename={extra}"]
    for name, path in externs:
        args += ["--extern", f"{name}={path}"]
    return {"crate_name": crate, "kind": kind, "args": args}


RECORDS = {
    # app -> mid -> greet, app -> greet (rlib), app -> macros (proc-macro), app -> util (unrelated lib)
    "greet.lib": rec("greet", "lib", "-g1"),
    "mid.lib": rec("mid", "lib", "-m1", [("greet", f"{D}/libgreet-g1.rmeta")]),
    "util.lib": rec("util", "lib", "-u1"),
    "macros.proc-macro": rec("macros", "proc-macro", "-p1"),
    "app.bin": rec(
        "app",
        "bin",
        "-a1",
        [
            ("mid", f"{D}/libmid-m1.rlib"),
            ("greet", f"{D}/libgreet-g1.rlib"),
            ("util", f"{D}/libutil-u1.rlib"),
            ("macros", f"{D}/libmacros-p1.so"),
            ("serde", "/ws/target/debug/deps/libserde-zz.rlib"),  # registry crate: not captured
        ],
    ),
}


@pytest.fixture
def graph():
    return dependency_graph(crate_node(k, r) for k, r in RECORDS.items())


def test_graph_from_extern_paths(graph):
    assert graph == {
        "greet.lib": frozenset(),
        "mid.lib": frozenset({"greet.lib"}),
        "util.lib": frozenset(),
        "macros.proc-macro": frozenset(),
        "app.bin": frozenset({"mid.lib", "greet.lib", "util.lib", "macros.proc-macro"}),
    }


def test_edit_of_the_program_crate_rebuilds_only_it(graph):
    assert crates_to_rebuild(graph, "app.bin", "app.bin") == ["app.bin"]


def test_edit_of_a_deep_library_rebuilds_the_chain_in_dependency_order(graph):
    assert crates_to_rebuild(graph, "greet.lib", "app.bin") == ["greet.lib", "mid.lib", "app.bin"]


def test_edit_of_a_direct_library(graph):
    assert crates_to_rebuild(graph, "util.lib", "app.bin") == ["util.lib", "app.bin"]


def test_crate_outside_the_program_is_refused():
    records = {**RECORDS, "tool.bin": rec("tool", "bin", "-t1")}
    graph = dependency_graph(crate_node(k, r) for k, r in records.items())
    with pytest.raises(PlanError, match="not part of"):
        crates_to_rebuild(graph, "tool.bin", "app.bin")
    with pytest.raises(PlanError, match="no captured crate"):
        crates_to_rebuild(graph, "nope.lib", "app.bin")


def test_lib_and_bin_of_one_package_share_a_name():
    records = {
        "app.lib": rec("app", "lib", "-l1"),
        "app.bin": rec("app", "bin", "-b1", [("app", f"{D}/libapp-l1.rlib")]),
    }
    graph = dependency_graph(crate_node(k, r) for k, r in records.items())
    assert crates_to_rebuild(graph, "app.lib", "app.bin") == ["app.lib", "app.bin"]


def test_diamond_orders_each_crate_after_its_dependencies():
    records = {
        "base.lib": rec("base", "lib", "-0"),
        "left.lib": rec("left", "lib", "-1", [("base", f"{D}/libbase-0.rmeta")]),
        "right.lib": rec("right", "lib", "-2", [("base", f"{D}/libbase-0.rmeta")]),
        "top.bin": rec("top", "bin", "-3", [("right", f"{D}/libright-2.rlib"), ("left", f"{D}/libleft-1.rlib")]),
    }
    graph = dependency_graph(crate_node(k, r) for k, r in records.items())
    order = crates_to_rebuild(graph, "base.lib", "top.bin")
    assert order[0] == "base.lib" and order[-1] == "top.bin"
    assert sorted(order[1:3]) == ["left.lib", "right.lib"]


def test_several_edited_crates_rebuild_the_union_in_dependency_order(graph):
    assert crates_to_rebuild_all(graph, ["util.lib", "greet.lib"], "app.bin") == ["greet.lib", "mid.lib", "util.lib", "app.bin"]
    assert crates_to_rebuild_all(graph, ["app.bin", "mid.lib"], "app.bin") == ["mid.lib", "app.bin"]


def test_edited_crates_of_another_program_are_left_out_unless_none_is_ours():
    records = {**RECORDS, "tool.bin": rec("tool", "bin", "-t1")}
    graph = dependency_graph(crate_node(k, r) for k, r in records.items())
    assert crates_to_rebuild_all(graph, ["tool.bin", "util.lib"], "app.bin") == ["util.lib", "app.bin"]
    with pytest.raises(PlanError, match="not part of"):
        crates_to_rebuild_all(graph, ["tool.bin"], "app.bin")
    with pytest.raises(PlanError, match="no edited crate"):
        crates_to_rebuild_all(graph, [], "app.bin")
