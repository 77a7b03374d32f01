"""What a captured program was built from, and when that build read each file.

`thinpatch run` starts (and starts again) only a binary built from the current sources: a
file saved after the build read it means the binary is older than the code. The sources are
the ones the daemon watches: every file rustc's dep-info lists for the crates the program is
built from (modules, `include_str!` inputs), except generated files under the target
directory; the manifests (`Cargo.toml`, `build.rs`, `Cargo.lock`) are counted at the time the
program was linked.

``sources_read`` and ``changed_since_build`` are pure; ``build_inputs`` reads the dep-info
files and ``file_mtimes`` the disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from capture.store import CaptureRecord, Captures, CrateKey
from daemon.service.depinfo import MANIFEST_NAMES, read_depinfo_file
from daemon.service.programs import Program, program_crates


def sources_read(
    records: Iterable[CaptureRecord], deps: Mapping[CrateKey, Sequence[str]], target_dir: str
) -> dict[str, float]:
    """Each source file these crates were compiled from, with the earliest time a rustc
    invocation that read it was recorded (the record is written before rustc starts, so a
    save after that time may be missing from the build).

    A crate's files are its dep-info list (``deps``), or its root file when that list is
    empty; files under ``target_dir`` (generated into ``OUT_DIR``) and manifests are not
    sources: see :func:`build_inputs` for the manifests."""
    read: dict[str, float] = {}
    under_target = os.path.join(os.path.abspath(target_dir), "")
    for record in records:
        files = list(deps.get(record.key) or ([record.src] if record.src else []))
        for path in files:
            if os.path.abspath(path).startswith(under_target) or os.path.basename(path) in MANIFEST_NAMES:
                continue
            read[path] = min(read.get(path, record.recorded_at), record.recorded_at)
    return read


def changed_since_build(read_at: Mapping[str, float], mtimes: Mapping[str, float]) -> list[str]:
    """The files saved after the build read them, sorted (a file with no mtime is gone: a
    build would not find it either, and the files that named it changed too)."""
    return sorted(path for path, at in read_at.items() if path in mtimes and mtimes[path] > at)


def build_inputs(captures: Captures, program: Program, manifests: Iterable[str]) -> dict[str, float]:
    """Every file ``program``'s capture was built from, with the time the build read it: the
    sources of the crates it is built from (as :func:`sources_read`) and ``manifests`` at the
    time the program was linked."""
    linked_at = max((r.recorded_at for r in captures.links.values()), default=0.0)
    records = [captures.rustc[key] for key in program_crates(captures, program.crate) if key in captures.rustc]
    deps = {r.key: read_depinfo_file(r.dep_info, r.cwd) if r.dep_info else [] for r in records}
    inputs = dict.fromkeys(manifests, linked_at)
    inputs.update(sources_read(records, deps, str(captures.capture_root.parent)))
    return inputs


def file_mtimes(paths: Iterable[str]) -> dict[str, float]:
    """Each file's modification time; files that don't exist are left out."""
    out = {}
    for path in paths:
        try:
            out[path] = os.stat(path).st_mtime
        except OSError:
            continue
    return out
