"""The session cache: where patch builds put their objects, metadata and libraries.

Takes a session's root directory. Gives its ``SessionLayout`` (every path in it, pure) and
the few effects on it that need a lock or care: creating it (``open_session``), handing out
patch numbers and the session tag, remembering the edited crates, pruning old patches.
What a crate's objects are is ``crate_objects``'s business.

Layout of one session (one workspace and scope)::

    <root>/
        patch-counter                    last patch number handed out (never reused)
        session-tag                      random tag made with the directory, part of every library name
        edited-crates.json               crates edited since each program's capture (cumulative patches)
        .lock                            serialises number reservations between processes
        .build.lock                      one patch build at a time (a daemon and `thinpatch patch`)
        depinfo/<crate>.<kind>.d         the files rustc read in the last patch build
        incremental/<crate>.<kind>/      rustc's incremental state for patch builds only
        objects/<kind>/<crate>/          rustc's objects (one per codegen unit) of each rebuilt crate
        objects/<kind>/<crate>.objects   the objects of the crate's last successful build (reused unchanged)
        deps/lib<crate><extra>.rmeta     metadata of rebuilt library crates, for their dependents
        out/                             rustc's --out-dir (nothing of ours lands here)
        patches/lib<crate>-<tag>-patch-<n>.so  patch libraries, the newest ``keep`` of them

Patch builds get incremental state of their own so they never wait on cargo's locks in
``target/``, and stay incremental from one patch to the next.

Library names must never repeat while a process that loaded one may still run, because
``dlopen`` returns the already-loaded handle for a path it has seen: a rebuilt file under an
old name would never be loaded. Numbers only grow within a session directory, and the tag
changes whenever the directory is made anew (deleted mid-session, say), so a restarted
count never gives a name already used.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from capture.platforms import Platform
from capture.private_fs import make_subdirs, open_file, write_atomic
from capture.store import CrateKey, safe_name
from daemon.build.errors import writing_session

DEFAULT_KEEP = 16
COUNTER_NAME = "patch-counter"
TAG_NAME = "session-tag"
EDITED_NAME = "edited-crates.json"
LOCK_NAME = ".lock"
BUILD_LOCK_NAME = ".build.lock"

# The platforms as the daemon's callers name them; equal to "linux", "macos" and "windows".
OS_LINUX = Platform.LINUX
OS_MACOS = Platform.MACOS
OS_WINDOWS = Platform.WINDOWS


def normalize_os(os_name: str) -> Platform:
    """The platform an OS name (``linux``, ``android``, ``macos``, ``darwin``, ``ios``,
    ``windows``, ``win32``, or a :class:`Platform`) belongs to; ValueError for another name."""
    return Platform.from_name(os_name)


def host_os() -> Platform:
    platform = Platform.from_sys_platform(sys.platform)
    if platform is None:
        raise ValueError(f"unsupported OS {sys.platform!r}")
    return platform


def target_os(target: str | None) -> Platform:
    """The OS a program built for rustc ``target`` runs on (the host's without one): patch
    libraries are named and linked the way that OS expects, whatever the host is. A triple
    thinpatch does not know is taken for the host's."""
    return (Platform.from_target(target) if target else None) or host_os()


def crate_file_stem(crate: str) -> str:
    """Crate names in file names use ``_`` where the package name has ``-``, as rustc does."""
    return crate.replace("-", "_")


def object_filename(crate: str) -> str:
    return f"{crate_file_stem(crate)}.o"


def library_filename_for_os(crate: str, os_name: str) -> str:
    return _library_filename(crate_file_stem(crate), os_name)


def _library_filename(stem: str, os_name: str) -> str:
    platform = normalize_os(os_name)
    if platform is Platform.MACOS:
        return f"lib{stem}.dylib"
    if platform is Platform.WINDOWS:
        return f"{stem}.dll"
    return f"lib{stem}.so"


def library_filename(crate: str) -> str:
    """The shared library name for ``crate`` on the host OS."""
    return library_filename_for_os(crate, host_os())


def patch_library_filename(crate: str, number: int, os_name: str | None = None, tag: str | None = None) -> str:
    """``lib<crate>-<tag>-patch-<n>.so`` (or the OS's equivalent); without a tag ``lib<crate>-patch-<n>.so``."""
    stem = crate_file_stem(crate) + (f"-{tag}" if tag else "")
    return _library_filename(f"{stem}-patch-{number}", os_name or host_os())


_PATCH_NUMBER = re.compile(r"-patch-(\d+)\.(?:so|dylib|dll)$")


def patch_number_of(filename: str) -> int | None:
    match = _PATCH_NUMBER.search(filename)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class SessionLayout:
    """Paths inside one session directory. Pure: nothing here touches the disk."""

    root: Path

    @property
    def counter_path(self) -> Path:
        return self.root / COUNTER_NAME

    @property
    def tag_path(self) -> Path:
        return self.root / TAG_NAME

    @property
    def edited_path(self) -> Path:
        return self.root / EDITED_NAME

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def build_lock_path(self) -> Path:
        return self.root / BUILD_LOCK_NAME

    @property
    def out_dir(self) -> Path:
        return self.root / "out"

    @property
    def deps_dir(self) -> Path:
        return self.root / "deps"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    def incremental_dir(self, crate: str, kind: str) -> Path:
        return self.root / "incremental" / f"{safe_name(crate_file_stem(crate))}.{safe_name(kind)}"

    def object_path(self, crate: str, kind: str) -> Path:
        # A package may have a lib and a bin crate of the same name: one directory per kind.
        return self.root / "objects" / safe_name(kind) / object_filename(crate)

    def depinfo_path(self, crate: str, kind: str) -> Path:
        # Every file rustc read for this crate's last patch build: new modules join the watch.
        return self.root / "depinfo" / f"{safe_name(crate_file_stem(crate))}.{safe_name(kind)}.d"

    def object_dir(self, crate: str, kind: str) -> Path:
        """Where rustc writes a crate's objects: with several codegen units it writes one
        ``.o`` per unit and ignores an explicit object path."""
        return self.root / "objects" / safe_name(kind) / safe_name(crate_file_stem(crate))

    def metadata_path(self, crate: str, extra_filename: str) -> Path:
        # Same file name cargo uses, so rustc's crate locator accepts it next to the originals.
        return self.deps_dir / f"lib{crate_file_stem(crate)}{extra_filename}.rmeta"

    def patch_library_path(self, crate: str, number: int, os_name: str | None = None, tag: str | None = None) -> Path:
        return self.patches_dir / patch_library_filename(crate, number, os_name, tag)


def default_session_root(capture_root: Path, scope: str) -> Path:
    """Sessions live beside the captures they replay: ``<target>/thinpatch/sessions/<scope>``."""
    return Path(capture_root) / "sessions" / safe_name(scope)


# --------------------------------------------------------------------------- effects


# Every directory directly in a session; rustc and the linker write below them by path.
SESSION_SUBDIRS = ("out", "deps", "patches", "objects", "incremental", "depinfo")


def open_session(root: Path) -> SessionLayout:
    """Create the session directories (0700), or check them, and return the layout.

    Objects and libraries from here are loaded into the program, so on every call (each
    build opens its session) the root and each subdirectory must be a directory of this user
    alone, not a link: raises SessionCacheError naming the one that is not, and the fix.
    """
    layout = SessionLayout(Path(root))
    with writing_session(layout.root):
        make_subdirs(layout.root, SESSION_SUBDIRS, within=layout.root.parent)
    return layout


def _open_lock(layout: SessionLayout) -> int:
    return open_file(layout.lock_path, os.O_RDWR | os.O_CREAT, within=layout.root)


def _existing_patch_numbers(layout: SessionLayout) -> list[int]:
    try:
        names = os.listdir(layout.patches_dir)
    except OSError:
        return []
    return [n for n in (patch_number_of(name) for name in names) if n is not None]


def reserve_patch_number(layout: SessionLayout) -> int:
    """Hand out the next patch number of this session.

    Numbers only grow, also across processes and restarts: the last one is kept in
    ``patch-counter`` and reservations are serialised with an exclusive file lock. The
    largest number among existing libraries is a floor in case the counter file was lost.
    """
    import fcntl

    fd = _open_lock(layout)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        last = 0
        try:
            last = int(layout.counter_path.read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            pass
        number = max([last, *_existing_patch_numbers(layout)]) + 1
        write_atomic(layout.counter_path, f"{number}\n".encode("ascii"), within=layout.root)
        return number
    finally:
        os.close(fd)  # closing releases the lock


def session_tag(layout: SessionLayout) -> str:
    """The tag of this session directory, made (8 random hex digits) the first time it is asked for."""
    try:
        tag = layout.tag_path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{8}", tag):
            return tag
    except OSError:
        pass
    tag = secrets.token_hex(4)
    tmp = layout.tag_path.with_name(f".{TAG_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, within=layout.root)
    try:
        os.write(fd, f"{tag}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, layout.tag_path, follow_symlinks=False)  # first writer wins; a concurrent one reads its tag
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return layout.tag_path.read_text(encoding="ascii").strip()


def read_edited_crates(layout: SessionLayout, program: CrateKey, captured_at: float) -> set[CrateKey]:
    """Crates edited since ``program`` was captured (at ``captured_at``), as recorded by earlier patches."""
    try:
        data = json.loads(layout.edited_path.read_text(encoding="utf-8"))
        entry = data[program.label]
        if entry["captured_at"] == captured_at:
            pairs = entry["crates"]
            return {CrateKey(name, kind) for name, kind in pairs if isinstance(name, str) and isinstance(kind, str)}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return set()


def record_edited_crates(layout: SessionLayout, program: CrateKey, captured_at: float, crates: set[CrateKey]) -> None:
    """Remember ``program``'s edited crates; other programs' entries are kept (read-modify-write
    under the session lock, as patch numbers are)."""
    import fcntl

    fd = _open_lock(layout)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            data = json.loads(layout.edited_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[program.label] = {"captured_at": captured_at, "crates": [[c.name, c.kind] for c in sorted(crates)]}
        write_atomic(layout.edited_path, json.dumps(data).encode("utf-8"), within=layout.root)
    finally:
        os.close(fd)


def prune_patches(layout: SessionLayout, keep: int = DEFAULT_KEEP) -> list[Path]:
    """Remove all but the ``keep`` newest patches (and files sharing their stem, such as a
    jump table written next to the library). Returns the removed paths."""
    numbers = sorted(set(_existing_patch_numbers(layout)))
    doomed = set(numbers[:-keep] if keep > 0 else numbers)
    removed: list[Path] = []
    if not doomed:
        return removed
    pattern = re.compile(r"-patch-(\d+)\.")
    for entry in sorted(layout.patches_dir.iterdir()):
        match = pattern.search(entry.name)
        if match and int(match.group(1)) in doomed:
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed
