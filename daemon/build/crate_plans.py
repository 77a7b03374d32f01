"""The crates a patch starts from, found in the captures, and the rustc plan of each crate it rebuilds.

Pure functions. Takes ``capture.store.Captures`` and the crates a user or a save names
(``app``, ``app.lib`` or a ``CrateKey``). Gives their capture records (``resolve_crate``,
``resolve_top``), the program's link record (``resolve_link``) and, from ``crate_graph``'s
order, one ``rustc_plan.ObjPlan`` per crate to rebuild (``plan_crates``). A crate that was
not captured raises MissingCapture; one that can't be patched raises PlanError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from capture.store import CaptureRecord, Captures, CrateKey, LinkRecord
from daemon.build.crate_graph import crate_node, crates_to_rebuild_all, dependency_graph
from daemon.build.errors import RECAPTURE_HINT, MissingCapture
from daemon.build.rustc_plan import ObjPlan, build_obj_plan


def _warnings_note(captures: Captures) -> str:
    return "".join(f"\n  {w}" for w in captures.warnings)


def resolve_crate(captures: Captures, crate: str | CrateKey) -> CaptureRecord:
    """A captured crate: by key, or as a user names it (``app``, or ``app.lib`` when a
    package has both kinds)."""
    record = captures.rustc.get(crate) if isinstance(crate, CrateKey) else captures.named(crate)
    if record is None:
        known = ", ".join(k.label for k in sorted(captures.rustc)) or "none"
        raise MissingCapture(
            f"no capture for crate {str(crate)!r} in {captures.capture_root} (scope {captures.scope or '?'}; "
            f"captured: {known}). {RECAPTURE_HINT}{_warnings_note(captures)}"
        )
    return record


def resolve_top(captures: Captures, top: CrateKey | None = None) -> CaptureRecord:
    """The program's crate: ``top``, or else the first captured bin/cdylib."""
    if top is not None:
        return resolve_crate(captures, top)
    tops = captures.top_crates()
    if not tops:
        raise MissingCapture(
            f"no program crate (bin/cdylib) captured in {captures.capture_root} "
            f"(scope {captures.scope or '?'}). {RECAPTURE_HINT}{_warnings_note(captures)}"
        )
    return tops[0]


def resolve_link(captures: Captures, top: CaptureRecord) -> LinkRecord:
    """The captured link line of the program ``top``."""
    link_record = captures.link_for(top.crate_name)
    if link_record is None:
        raise MissingCapture(
            f"no link line captured for {top.crate_name} in {captures.capture_root}. "
            f"{RECAPTURE_HINT}{_warnings_note(captures)}"
        )
    return link_record


def plan_crates(
    captures: Captures,
    edited: Sequence[CaptureRecord],
    top: CaptureRecord,
    session_root: Path,
    *,
    rendered_ansi: bool = False,
) -> list[ObjPlan]:
    """Plans for every crate the patch rebuilds, dependencies first. Pure given captures.

    Several edited crates give one patch holding all of them (and every crate between each
    of them and the program), each compiled against the others' new metadata."""
    records = {k: r for k, r in captures.rustc.items() if r.kind != "build-script"}
    records.setdefault(top.key, top)
    for record in edited:
        records.setdefault(record.key, record)
    nodes = {k: crate_node(r) for k, r in records.items()}
    order = crates_to_rebuild_all(dependency_graph(nodes.values()), [r.key for r in edited], top.key)
    plans: list[ObjPlan] = []
    rebuilt_metadata: dict[str, Path] = {}  # crate name -> new .rmeta
    for key in order:
        record = records[key]
        node = nodes[key]
        overrides = {name: rebuilt_metadata[name] for name in node.externs if name in rebuilt_metadata}
        plan = build_obj_plan(
            record,
            session_root,
            emit_metadata=key != top.key,
            extern_overrides=overrides,
            rendered_ansi=rendered_ansi,
        )
        if plan.metadata_path is not None:
            rebuilt_metadata[record.crate_name] = plan.metadata_path
        plans.append(plan)
    return plans
