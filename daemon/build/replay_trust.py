"""Whether the programs a patch build would run are still ones only you or root could have written.

Every patch build replays programs that a capture recorded: each crate's rustc, the linker, and
the programs its link line names (``-fuse-ld=<path>``, ``--ld-path=<path>``, ``-B<dir>``). Each
is checked again before each build, with its whole path (see ``capture.trust.foreign_writer``).
A cargo config that applied at capture and set a compiler, linker, flags or rustc's
environment must also still be the same file with the same owner: if it was deleted or changed
hands since, the tools it may have named are not replayed.

:func:`replay_refusals` is pure: capture records and a :class:`TrustProbe` (the disk, or a
test's stand-in) in, the reasons to refuse out. :class:`DiskProbe` looks at the disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from capture.store import CaptureRecord, ConfigSeen, LinkRecord
from capture.trust import Distrust, foreign_writer, owner_name

RECAPTURE = "Run `thinpatch capture` again"


class TrustProbe(Protocol):
    def which(self, program: str, search_path: str, cwd: str) -> str | None:
        """The file ``program`` runs as (looked up like exec does), or None if there is none."""

    def distrust(self, path: str) -> Distrust | None:
        """Who else could have written ``path`` or a directory above it (None: no one)."""

    def identity(self, path: str) -> tuple[int, int, int] | None:
        """(device, inode, owner) of ``path``, or None when it is gone."""


@dataclass(frozen=True)
class Replayed:
    """One program (or program directory) a patch build runs, and how a message names it."""

    what: str  # "rustc (crate app)", "the linker", ...
    program: str
    search_path: str
    cwd: str
    is_directory: bool = False


def _link_programs(link: LinkRecord, search_path: str, cwd: str) -> list[Replayed]:
    found = [Replayed("the linker", link.linker, search_path, cwd)]
    args = list(link.args)
    for i, arg in enumerate(args):
        if arg.startswith("-fuse-ld=") and os.sep in arg:  # a bare name is looked up in -B and PATH
            found.append(Replayed("the linker that -fuse-ld names", arg.split("=", 1)[1], search_path, cwd))
        elif arg.startswith("--ld-path="):
            found.append(Replayed("the linker that --ld-path names", arg.split("=", 1)[1], search_path, cwd))
        elif arg == "-B" and i + 1 < len(args):
            found.append(Replayed("the programs in the link's -B directory", args[i + 1], search_path, cwd, True))
        elif arg.startswith("-B") and len(arg) > 2:
            found.append(Replayed("the programs in the link's -B directory", arg[2:], search_path, cwd, True))
    return found


def replayed_programs(records: Iterable[CaptureRecord], link: LinkRecord | None) -> list[Replayed]:
    """Every program a patch build of ``records`` (and the program's ``link``) would run. A
    captured ``-C linker=`` is not among them: patch objects are compiled with ``--emit=obj``
    and linked by the recorded link line."""
    found: list[Replayed] = []
    top: CaptureRecord | None = None
    for record in records:
        search_path = record.env.get("PATH") or os.defpath
        found.append(Replayed(f"rustc (crate {record.key.label})", record.rustc, search_path, record.cwd))
        if record.is_top:
            top = record
    if link is not None:
        search_path = (top.env.get("PATH") if top else None) or os.defpath
        found.extend(_link_programs(link, search_path, link.cwd or (top.cwd if top else "/")))
    unique: dict[tuple[str, str, str], Replayed] = {}
    for item in found:
        unique.setdefault((item.program, item.search_path, item.cwd), item)
    return list(unique.values())


def _config_refusal(config: ConfigSeen, probe: TrustProbe) -> str | None:
    now = probe.identity(config.file)
    if now is None:
        change = "has been deleted since"
    elif now[2] != config.owner:
        change = f"now belongs to {owner_name(now[2])}"
    elif now[:2] != (config.device, config.inode):
        change = "has been replaced by another file since"
    else:
        distrust = probe.distrust(config.file)
        if distrust is None:
            return None
        change = f"can now be changed by someone else ({distrust.path} {distrust.problem})"
    return (
        f"not running the compiler and linker recorded at capture: the cargo config {config.file}, "
        f"which applied to that build and can name them, their flags and environment, {change}. "
        f"{RECAPTURE} to record the tools as cargo chooses them now."
    )


def _program_refusal(item: Replayed, probe: TrustProbe) -> str | None:
    if item.is_directory:
        path: str | None = item.program if os.path.isabs(item.program) else os.path.join(item.cwd, item.program)
    else:
        path = probe.which(item.program, item.search_path, item.cwd)
    if path is None:
        return None  # not there at all: running it fails and says so (ToolNotFound)
    distrust = probe.distrust(path)
    if distrust is None:
        return None
    return (
        f"not running {item.what} {path}: {distrust.path} {distrust.problem}, so someone else could "
        f"have replaced it since the capture. Have root or you own it and make it writable only by you "
        f"(or fix the toolchain's installation), then {RECAPTURE[0].lower() + RECAPTURE[1:]}."
    )


def replay_refusals(records: Sequence[CaptureRecord], link: LinkRecord | None, probe: TrustProbe) -> list[str]:
    """Why a patch build of ``records`` must not run, one reason per config or program (empty:
    it may). Configs first: a config that changed hands makes every tool it named suspect."""
    refusals: list[str] = []
    configs = {c.file: c for record in records for c in record.cargo_configs if c.names_tools}
    for config in configs.values():
        reason = _config_refusal(config, probe)
        if reason:
            refusals.append(reason)
    for item in replayed_programs(records, link):
        reason = _program_refusal(item, probe)
        if reason:
            refusals.append(reason)
    return refusals


class DiskProbe:
    """:class:`TrustProbe` on the real file system."""

    def which(self, program: str, search_path: str, cwd: str) -> str | None:
        if os.sep in program:
            path = program if os.path.isabs(program) else os.path.join(cwd, program)
            return path if os.path.lexists(path) else None
        return shutil.which(program, path=search_path)

    def distrust(self, path: str) -> Distrust | None:
        return foreign_writer(path)

    def identity(self, path: str) -> tuple[int, int, int] | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_dev, info.st_ino, info.st_uid
