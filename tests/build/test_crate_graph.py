"""Which workspace crates a patch rebuilds, from captured --extern arguments."""

from __future__ import annotations

import pytest

from capture.store import CaptureRecord, CrateKey
from daemon.build.crate_graph import crate_node, crates_to_rebuild, crates_to_rebuild_all, dependency_graph
from daemon.build.rustc_plan import PlanError

D = "/ws/target/debug/deps"


def rec(crate, kind, extra, externs=()) -> CaptureRecord:
    args = ["--crate-name", crate, "-C", f"extra-filename={extra}"]
    for name, path in externs:
        args += ["--extern", f"{name}={path}"]
    return CaptureRecord(crate, kind, (kind,), "rustc", tuple(args), "/ws", {}, 1.0)


RECORDS = {
    # app -> mid -> greet, app -> greet (rlib), app -> macros (proc-macro), app -> util (unrelated lib)
    CrateKey("greet", "lib"): rec("greet", "lib", "-g1"),
    CrateKey("mid", "lib"): rec("mid", "lib", "-m1", [("greet", f"{D}/libgreet-g1.rmeta")]),
    CrateKey("util", "lib"): rec("util", "lib", "-u1"),
    CrateKey("macros", "proc-macro"): rec("macros", "proc-macro", "-p1"),
    CrateKey("app", "bin"): rec(
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
    return dependency_graph(crate_node(r) for r in RECORDS.values())


def test_graph_from_extern_paths(graph):
    assert graph == {
        CrateKey("greet", "lib"): frozenset(),
        CrateKey("mid", "lib"): frozenset({CrateKey("greet", "lib")}),
        CrateKey("util", "lib"): frozenset(),
        CrateKey("macros", "proc-macro"): frozenset(),
        CrateKey("app", "bin"): frozenset(
            {
                CrateKey("mid", "lib"),
                CrateKey("greet", "lib"),
                CrateKey("util", "lib"),
                CrateKey("macros", "proc-macro"),
            }
        ),
    }


def test_edit_of_the_program_crate_rebuilds_only_it(graph):
    assert crates_to_rebuild(graph, CrateKey("app", "bin"), CrateKey("app", "bin")) == [CrateKey("app", "bin")]


def test_edit_of_a_deep_library_rebuilds_the_chain_in_dependency_order(graph):
    assert crates_to_rebuild(graph, CrateKey("greet", "lib"), CrateKey("app", "bin")) == [
        CrateKey("greet", "lib"),
        CrateKey("mid", "lib"),
        CrateKey("app", "bin"),
    ]


def test_edit_of_a_direct_library(graph):
    assert crates_to_rebuild(graph, CrateKey("util", "lib"), CrateKey("app", "bin")) == [
        CrateKey("util", "lib"),
        CrateKey("app", "bin"),
    ]


def test_crate_outside_the_program_is_refused():
    records = {**RECORDS, CrateKey("tool", "bin"): rec("tool", "bin", "-t1")}
    graph = dependency_graph(crate_node(r) for r in records.values())
    with pytest.raises(PlanError, match="not part of"):
        crates_to_rebuild(graph, CrateKey("tool", "bin"), CrateKey("app", "bin"))
    with pytest.raises(PlanError, match="no captured crate"):
        crates_to_rebuild(graph, CrateKey("nope", "lib"), CrateKey("app", "bin"))


def test_lib_and_bin_of_one_package_share_a_name():
    records = {
        CrateKey("app", "lib"): rec("app", "lib", "-l1"),
        CrateKey("app", "bin"): rec("app", "bin", "-b1", [("app", f"{D}/libapp-l1.rlib")]),
    }
    graph = dependency_graph(crate_node(r) for r in records.values())
    assert crates_to_rebuild(graph, CrateKey("app", "lib"), CrateKey("app", "bin")) == [
        CrateKey("app", "lib"),
        CrateKey("app", "bin"),
    ]


def test_diamond_orders_each_crate_after_its_dependencies():
    records = {
        CrateKey("base", "lib"): rec("base", "lib", "-0"),
        CrateKey("left", "lib"): rec("left", "lib", "-1", [("base", f"{D}/libbase-0.rmeta")]),
        CrateKey("right", "lib"): rec("right", "lib", "-2", [("base", f"{D}/libbase-0.rmeta")]),
        CrateKey("top", "bin"): rec(
            "top", "bin", "-3", [("right", f"{D}/libright-2.rlib"), ("left", f"{D}/libleft-1.rlib")]
        ),
    }
    graph = dependency_graph(crate_node(r) for r in records.values())
    order = crates_to_rebuild(graph, CrateKey("base", "lib"), CrateKey("top", "bin"))
    assert order[0] == CrateKey("base", "lib") and order[-1] == CrateKey("top", "bin")
    assert sorted(order[1:3]) == [CrateKey("left", "lib"), CrateKey("right", "lib")]


def test_several_edited_crates_rebuild_the_union_in_dependency_order(graph):
    assert crates_to_rebuild_all(
        graph, [CrateKey("util", "lib"), CrateKey("greet", "lib")], CrateKey("app", "bin")
    ) == [CrateKey("greet", "lib"), CrateKey("mid", "lib"), CrateKey("util", "lib"), CrateKey("app", "bin")]
    assert crates_to_rebuild_all(graph, [CrateKey("app", "bin"), CrateKey("mid", "lib")], CrateKey("app", "bin")) == [
        CrateKey("mid", "lib"),
        CrateKey("app", "bin"),
    ]


def test_edited_crates_of_another_program_are_left_out_unless_none_is_ours():
    records = {**RECORDS, CrateKey("tool", "bin"): rec("tool", "bin", "-t1")}
    graph = dependency_graph(crate_node(r) for r in records.values())
    assert crates_to_rebuild_all(graph, [CrateKey("tool", "bin"), CrateKey("util", "lib")], CrateKey("app", "bin")) == [
        CrateKey("util", "lib"),
        CrateKey("app", "bin"),
    ]
    with pytest.raises(PlanError, match="not part of"):
        crates_to_rebuild_all(graph, [CrateKey("tool", "bin")], CrateKey("app", "bin"))
    with pytest.raises(PlanError, match="no edited crate"):
        crates_to_rebuild_all(graph, [], CrateKey("app", "bin"))
