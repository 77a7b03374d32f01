"""Which captured workspace crates a patch rebuilds, and in what order.

Pure functions. The graph comes from the captured invocations themselves: a crate depends
on another when one of its ``--extern name=path`` arguments names a file the other one
produces (``lib<crate><extra-filename>.rlib``/``.rmeta``/``.so``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from daemon.build.rustc_plan import PlanError, codegen_value, extern_paths
from daemon.build.session_cache import crate_file_stem

_ARTIFACT_EXTENSIONS = (".rlib", ".rmeta", ".so", ".dylib", ".dll")


@dataclass(frozen=True)
class CrateNode:
    key: str  # capture.store.rustc_key(crate_name, kind)
    crate_name: str
    kind: str
    artifact_stem: str  # lib<crate><extra-filename>
    externs: Mapping[str, str]  # --extern name -> path


def _record_field(record: Any, name: str) -> Any:
    data = record if isinstance(record, Mapping) else record.data
    return data.get(name)


def crate_node(key: str, record: Any) -> CrateNode:
    args = list(_record_field(record, "args") or [])
    crate = _record_field(record, "crate_name")
    extra = _record_field(record, "extra_filename")
    if extra is None:
        extra = codegen_value(args, "extra-filename") or ""
    return CrateNode(
        key=key,
        crate_name=crate,
        kind=_record_field(record, "kind"),
        artifact_stem=f"lib{crate_file_stem(crate)}{extra}",
        externs=extern_paths(args),
    )


def _artifact_stem_of(path: str) -> str:
    name = os.path.basename(path)
    for ext in _ARTIFACT_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def dependency_graph(nodes: Iterable[CrateNode]) -> dict[str, frozenset[str]]:
    """{crate key: keys of the captured crates it names with ``--extern``}."""
    nodes = list(nodes)
    by_stem = {n.artifact_stem: n.key for n in nodes if n.kind != "bin"}
    graph: dict[str, frozenset[str]] = {}
    for node in nodes:
        deps = {by_stem[s] for s in map(_artifact_stem_of, node.externs.values()) if s in by_stem}
        deps.discard(node.key)
        graph[node.key] = frozenset(deps)
    return graph


def _reachable(graph: Mapping[str, Iterable[str]], start: str) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for dep in graph.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def crates_to_rebuild(graph: Mapping[str, Iterable[str]], edited: str, top: str) -> list[str]:
    """The edited crate, every crate between it and ``top``, and ``top``: dependencies first.

    A crate is "between" when ``top`` depends on it (directly or not) and it depends on the
    edited crate: its code may inline or monomorphise the edited code, and the patch's code
    must call the new library code rather than the running program's.
    """
    return crates_to_rebuild_all(graph, [edited], top)


def crates_to_rebuild_all(graph: Mapping[str, Iterable[str]], edited: Iterable[str], top: str) -> list[str]:
    """``crates_to_rebuild`` for several edited crates at once: the union, dependencies first.

    Edited crates that ``top`` does not contain are left out (they belong to another
    program); if none of them is part of ``top``, that is an error.
    """
    edited = list(dict.fromkeys(edited))
    if not edited:
        raise PlanError("no edited crate given")
    for key in edited:
        if key not in graph:
            raise PlanError(f"no captured crate {key!r}")
    if top not in graph:
        raise PlanError(f"no captured crate {top!r}")
    below_top = _reachable(graph, top)
    inside = [key for key in edited if key in below_top]
    if not inside:
        raise PlanError(f"crate {edited[0]!r} is not part of {top!r}: editing it cannot change the running program")
    selected = {key for key in below_top if any(e in _reachable(graph, key) for e in inside)}

    ordered: list[str] = []
    done: set[str] = set()

    def visit(key: str) -> None:
        if key in done:
            return
        done.add(key)
        for dep in sorted(graph.get(key, ())):
            if dep in selected:
                visit(dep)
        ordered.append(key)

    visit(top)
    return ordered
