"""A rebuilt crate's objects in the session cache, and the list of its last good build's.

Takes a crate's ``rustc_plan.ObjPlan``, which names its object directory, metadata and
dep-info paths. Before rustc runs, ``forget_outputs`` drops what could pass for a good
build; after, ``written_objects`` finds the objects a run wrote when rustc announced none,
and ``record_objects`` lists them. A later build whose inputs are unchanged links the listed
objects again (``reusable_objects``). rustc names each build's objects anew, so the objects
of earlier builds stay until ``remove_stale_objects`` removes them beside the link.
Failures to write the session raise SessionCacheError.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from daemon.build.errors import writing_session
from daemon.build.rustc_plan import ObjPlan


def _objects_list(plan: ObjPlan) -> Path:
    """Where the objects of the crate's last successful build are listed (one path a line)."""
    return plan.obj_dir.with_name(plan.obj_dir.name + ".objects")


def forget_outputs(plan: ObjPlan, session_root: Path | None) -> None:
    """Drop the crate's object list, metadata and dep-info before rustc runs: a failed or
    cancelled build leaves nothing that looks like a good one. The objects themselves stay
    until the build has succeeded (removing hundreds of files would delay rustc): only the
    ones rustc announces are linked, and the rest are removed afterwards."""
    with writing_session(session_root or plan.obj_dir.parent):
        plan.obj_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (_objects_list(plan), plan.metadata_path, plan.depinfo_path):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass


def written_objects(obj_dir: Path, earlier: Collection[str] = ()) -> tuple[Path, ...]:
    """The objects in ``obj_dir`` whose names are not in ``earlier``, sorted: the same units
    give the same link line on every save."""
    return tuple(sorted(
        Path(e.path) for e in os.scandir(obj_dir) if e.name.endswith(".o") and e.name not in earlier and e.is_file()
    ))


def record_objects(plan: ObjPlan, objects: Sequence[Path], session_root: Path | None) -> None:
    """List ``objects`` as the crate's last successful build's."""
    with writing_session(session_root or plan.obj_dir.parent):
        _objects_list(plan).write_text("".join(f"{o}\n" for o in objects))


def reusable_objects(plan: ObjPlan) -> tuple[Path, ...]:
    """The objects a successful earlier build listed (a failed one lists none), or ()."""
    if plan.metadata_path is not None and not plan.metadata_path.is_file():
        return ()
    try:
        objects = tuple(Path(line) for line in _objects_list(plan).read_text().splitlines() if line)
    except OSError:
        return ()
    return objects if objects and all(o.is_file() for o in objects) else ()


def remove_stale_objects(rebuilt: Iterable[Sequence[Path]]) -> None:
    """Remove the objects of earlier builds from the directories of the crates just rebuilt,
    each given by the objects of its new build, which stay (rustc names each build's objects
    anew). Run beside the link: none of the removed ones is linked."""
    for objects in rebuilt:
        if not objects:
            continue
        keep = {str(o) for o in objects}
        try:
            for entry in os.scandir(objects[0].parent):
                if entry.name.endswith(".o") and entry.path not in keep:
                    os.unlink(entry.path)
        except OSError:
            pass  # left for the next build to remove; they are never linked
