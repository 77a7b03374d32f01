"""Which object files the running program was linked from, per workspace crate.

A patch is compared with the code the running process runs. That code is the program crate's
own objects (``*.rcgu.o``, which rustc deletes after the link; ``thinpatch-linker`` keeps them
under ``capture.store.link_objects_dir`` with a manifest) and the workspace libraries' ``.rlib``
files named on the captured link line (they stay in ``target/``). A set that no longer matches
the link (a later link whose objects could not be kept, an rlib rebuilt since) is reported as
unavailable with the reason, never used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from capture.store import CaptureRecord, Captures, CrateKey, LinkRecord, link_key, link_objects_dir
from capture.trust import untrusted_reason

OBJECTS_MANIFEST = "objects.json"  # as capture.linker_shim writes it


@dataclass(frozen=True)
class Baseline:
    """A snapshot: its files are checked when it is made and taken as fixed while it lives
    (their prints are merged once, ``PrintCache.merged_snapshot``)."""

    objects: dict[CrateKey, list[Path]] = field(default_factory=dict)  # per crate: its .o files, or its .rlib
    unavailable: dict[CrateKey, str] = field(default_factory=dict)  # per crate: why its objects can't be used


def _kept_objects(captures: Captures, link: LinkRecord) -> tuple[list[Path], str | None]:
    directory = link_objects_dir(captures.capture_root, link.scope or "unknown", link_key(link.output))
    for place in (directory.parent.parent, directory.parent, directory):
        if place.is_symlink():
            return [], f"{place} is a symbolic link, which is never followed"
    if not directory.is_dir():
        return [], f"no objects were kept for {link.output} (captured before objects were kept?)"
    reason = untrusted_reason(directory)
    if reason is not None:
        return [], f"untrusted objects directory {directory}: {reason}"
    try:
        manifest = json.loads((directory / OBJECTS_MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("recorded_at") != link.recorded_at or manifest.get("output") != link.output:
            return [], f"the objects kept in {directory} belong to another link of {link.output}"
        paths = []
        for entry in manifest["objects"]:
            path = directory / os.path.basename(str(entry["file"]))
            info = os.stat(path, follow_symlinks=False)
            if (info.st_size, info.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
                return [], f"{path} was rewritten after the link"
            paths.append(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [], f"the objects kept in {directory} can't be read: {exc}"
    return paths, None


def _rlib(record: CaptureRecord, link: LinkRecord) -> tuple[list[Path], str | None]:
    wanted = f"lib{record.crate_name}{record.extra_filename or ''}.rlib"
    for arg in link.args:
        if os.path.basename(arg) == wanted:
            path = Path(arg if os.path.isabs(arg) else os.path.join(link.cwd or "", arg))
            try:
                modified = path.stat().st_mtime
            except OSError:
                return [], f"{path} no longer exists"
            if modified > link.recorded_at:
                return [], f"{path} was rebuilt after the program was linked"
            return [path], None
    return [], f"{wanted} is not on the link line"


def captured_objects(captures: Captures, link: LinkRecord) -> Baseline:
    """Per workspace crate of ``captures`` (the program crate of ``link``, and each library
    crate the link used), the files the running program was linked from. Build scripts and
    proc-macros are not linked into it and are left out."""
    baseline = Baseline()
    for key, record in sorted(captures.rustc.items()):
        if record.kind in ("build-script", "proc-macro") or "proc-macro" in record.crate_types:
            continue
        if record.is_top:
            if record.crate_name != link.crate_name:
                continue
            paths, problem = _kept_objects(captures, link)
        else:
            paths, problem = _rlib(record, link)
        if problem is None:
            baseline.objects[key] = paths
        else:
            baseline.unavailable[key] = problem
    return baseline
