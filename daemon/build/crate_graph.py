"""Which captured workspace crates a patch rebuilds, and in what order.

Pure functions. Takes capture records (``crate_node``) and gives the dependency graph between
them and the crates to rebuild for an edit, dependencies first (``crates_to_rebuild_all``).
The graph comes from the captured invocations themselves: a crate depends on another when
one of its ``--extern name=path`` arguments names a file the other one produces
(``lib<crate><extra-filename>.rlib``/``.rmeta``/``.so``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from capture.rustc_args import codegen_value
from capture.store import CaptureRecord, CrateKey
from daemon.build.rustc_plan import PlanError, extern_paths
from daemon.build.session_cache import crate_file_stem

_ARTIFACT_EXTENSIONS = (".rlib", ".rmeta", ".so", ".dylib", ".dll")


@dataclass(frozen=True)
class CrateNode:
    key: CrateKey
    artifact_stem: str  # lib<crate><extra-filename>
    externs: Mapping[str, str]  # --extern name -> path


def crate_node(record: CaptureRecord) -> CrateNode:
    extra = record.extra_filename
    if extra is None:
        extra = codegen_value(record.args, "extra-filename") or ""
    return CrateNode(
        key=record.key,
        artifact_stem=f"lib{crate_file_stem(record.crate_name)}{extra}",
        externs=extern_paths(record.args),
    )


def _artifact_stem_of(path: str) -> str:
    name = os.path.basename(path)
    for ext in _ARTIFACT_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


Graph = Mapping[CrateKey, Iterable[CrateKey]]


def dependency_graph(nodes: Iterable[CrateNode]) -> dict[CrateKey, frozenset[CrateKey]]:
    """{crate: the captured crates it names with ``--extern``}."""
    nodes = list(nodes)
    by_stem = {n.artifact_stem: n.key for n in nodes if n.key.kind != "bin"}
    graph: dict[CrateKey, frozenset[CrateKey]] = {}
    for node in nodes:
        deps = {by_stem[s] for s in map(_artifact_stem_of, node.externs.values()) if s in by_stem}
        deps.discard(node.key)
        graph[node.key] = frozenset(deps)
    return graph


def _reachable(graph: Graph, start: CrateKey) -> set[CrateKey]:
    seen = {start}
    stack = [start]
    while stack:
        for dep in graph.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def crates_to_rebuild(graph: Graph, edited: CrateKey, top: CrateKey) -> list[CrateKey]:
    """The edited crate, every crate between it and ``top``, and ``top``: dependencies first.

    A crate is "between" when ``top`` depends on it (directly or not) and it depends on the
    edited crate: its code may inline or monomorphise the edited code, and the patch's code
    must call the new library code rather than the running program's.
    """
    return crates_to_rebuild_all(graph, [edited], top)


def crates_to_rebuild_all(graph: Graph, edited: Iterable[CrateKey], top: CrateKey) -> list[CrateKey]:
    """``crates_to_rebuild`` for several edited crates at once: the union, dependencies first.

    Edited crates that ``top`` does not contain are left out (they belong to another
    program); if none of them is part of ``top``, that is an error.
    """
    edited = list(dict.fromkeys(edited))
    if not edited:
        raise PlanError("no edited crate given")
    for key in edited:
        if key not in graph:
            raise PlanError(f"no captured crate {key.label!r}")
    if top not in graph:
        raise PlanError(f"no captured crate {top.label!r}")
    below_top = _reachable(graph, top)
    inside = [key for key in edited if key in below_top]
    if not inside:
        raise PlanError(
            f"crate {edited[0].label!r} is not part of {top.label!r}: editing it cannot change the running program"
        )
    selected = {key for key in below_top if any(e in _reachable(graph, key) for e in inside)}

    ordered: list[CrateKey] = []
    done: set[CrateKey] = set()

    def visit(key: CrateKey) -> None:
        if key in done:
            return
        done.add(key)
        for dep in sorted(graph.get(key, ())):
            if dep in selected:
                visit(dep)
        ordered.append(key)

    visit(top)
    return ordered
