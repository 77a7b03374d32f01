"""The files a served workspace is built from, read off the disk.

Takes a workspace's capture records and the dep-info files rustc wrote for them (at capture
time, and again in each patch build); gives the ``SourceMap`` a session watches and maps saves
with, the new files a patch build read, and the sources saved since the capture. Everything
here reads files (dep-info, git's ignore rules, modification times): call it off the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from capture.store import CaptureRecord, Captures, CrateKey
from daemon.build.session_cache import SessionLayout
from daemon.service.depinfo import (
    MANIFEST_NAMES,
    CrateSources,
    SourceMap,
    build_source_map,
    crate_sources,
    read_depinfo_file,
)
from daemon.service.watcher import filter_watch_set, git_ignored


def read_source_map(workspace: str, target_dir: str, captures: Iterable[Captures]) -> SourceMap:
    """Which captured crates each source file of ``workspace`` belongs to, and the files whose
    change needs cargo (manifests, build scripts, proc-macro sources). Files under
    ``target_dir``, in ``.git`` and ignored by git are left out."""
    crates: list[CrateSources] = []
    compile_time_only: list[str] = []
    records = {(c.scope, key): r for c in captures for key, r in c.rustc.items()}
    for record in records.values():
        deps = read_depinfo_file(record.dep_info, record.cwd) if record.dep_info else []
        if not deps and record.src:
            deps = [record.src]
        if record.kind in ("build-script", "proc-macro"):
            # Code that runs inside cargo/rustc, not in the program: a patch can't carry it.
            compile_time_only.extend(d for d in deps if not d.startswith(target_dir + os.sep))
            continue
        crates.append(crate_sources(record.key, deps, record.manifest_dir, workspace, target_dir))
    smap = build_source_map(crates)
    for path in compile_time_only:
        smap.manifests.setdefault(path, [])
    files = smap.watched_files()
    ignored = git_ignored(sorted(files), workspace) if os.path.isdir(workspace) else set()
    keep = filter_watch_set(files, [target_dir], ignored)
    smap.by_file = {f: v for f, v in smap.by_file.items() if f in keep}
    # A symlinked source is edited through its target: watch the target under the same crates.
    for path, keys in list(smap.by_file.items()):
        real = os.path.realpath(path)
        if real != path:
            smap.by_file.setdefault(real, list(keys))
    smap.manifests = {
        f: v for f, v in smap.manifests.items() if f in keep or f.endswith(("Cargo.toml", "Cargo.lock", "build.rs"))
    }
    return smap


def sources_edited_since_capture(by_file: Mapping[str, Iterable[CrateKey]], captures: Captures) -> set[str]:
    """Source files modified after the rustc invocation of a crate that reads them was recorded."""
    edited = set()
    for path, crates in by_file.items():
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        for crate in crates:
            record = captures.rustc.get(crate)
            if record is not None and mtime > record.recorded_at:
                edited.add(path)
                break
    return edited


def patch_build_sources(
    records: Mapping[CrateKey, CaptureRecord], crates: Iterable[CrateKey], layout: SessionLayout
) -> dict[str, set[CrateKey]]:
    """Every file rustc read for ``crates`` in the session's last patch build, with the crates
    that read it (from the dep-info files the patch build wrote)."""
    found: dict[str, set[CrateKey]] = {}
    for key in crates:
        record = records.get(key)
        if record is None:
            continue
        path = layout.depinfo_path(record.crate_name, record.kind)
        for source in read_depinfo_file(path, record.cwd):
            found.setdefault(source, set()).add(record.key)
    return found


def unwatched_sources(read: Iterable[str], smap: SourceMap, target_dir: str) -> set[str]:
    """Of the files a patch build read, the sources the map does not know yet (a new ``mod``,
    a new ``include_str!`` input): not manifests, not under ``target_dir``."""
    candidates = {
        f
        for f in read
        if f not in smap.by_file and f not in smap.manifests and os.path.basename(f) not in MANIFEST_NAMES
    }
    return filter_watch_set(candidates, [target_dir])
