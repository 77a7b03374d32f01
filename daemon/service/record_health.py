"""Damaged capture records: which record files can't be read, and the one message that says
so and names the fix.

A record damaged at daemon start, or rewritten with garbage while the daemon runs, would
otherwise only shrink what is served (a program that disappears from ``status``, crates
whose edits pass in silence). The engine turns :func:`damage_report` into a
``full-rebuild-required`` event naming the files and a ``problems`` entry in ``status``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from capture.store import captures_dir, list_scopes, load_captures

# (path, mtime_ns, size) of every record file: changes whenever one is written or removed.
RecordsStamp = tuple[tuple[str, int, int], ...]


class DamageReport(NamedTuple):
    files: list[str]  # the record files the warnings name
    message: str


def damage_report(workspace: str, warnings: Iterable[str], record_files: Iterable[str]) -> DamageReport | None:
    """The report for the store's ``warnings`` about ``workspace``'s records (pure), or None
    when there are none."""
    listed = sorted(set(warnings))
    if not listed:
        return None
    text = "\n".join(listed)
    files = sorted(f for f in record_files if f in text)
    message = (
        "some capture records could not be read, so patches for their crates can't be built:\n  "
        + "\n  ".join(listed)
        + f"\nRun `thinpatch capture` again in {workspace} and restart the program."
    )
    return DamageReport(files, message)


# --------------------------------------------------------------------------- reading (effects)


def record_files(capture_root: Path) -> list[str]:
    return sorted(str(p) for p in captures_dir(capture_root).glob("*/*/*.json"))


def records_stamp(capture_root: Path) -> RecordsStamp:
    stamp = []
    for path in record_files(capture_root):
        try:
            info = os.stat(path)
        except OSError:
            continue
        stamp.append((path, info.st_mtime_ns, info.st_size))
    return tuple(stamp)


def read_damage(workspace: str, capture_root: Path) -> DamageReport | None:
    """Read every scope's records again and report those that can't be used."""
    warnings = [w for scope in list_scopes(capture_root) for w in load_captures(capture_root, scope).warnings]
    return damage_report(workspace, warnings, record_files(capture_root))


def changed_damage(
    served: dict[str, tuple[Path, RecordsStamp | None]],
) -> dict[str, tuple[RecordsStamp, DamageReport | None]]:
    """For each served workspace (key: its real path; value: its capture root and the records
    stamp last seen), the new stamp and damage report when any record file changed since."""
    changed = {}
    for key, (capture_root, seen) in served.items():
        stamp = records_stamp(capture_root)
        if stamp != seen:
            changed[key] = (stamp, read_damage(key, capture_root))
    return changed
