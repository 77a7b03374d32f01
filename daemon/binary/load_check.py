"""Will the patch load into the running program? Decided from symbol tables, before any client
hears of the patch.

``check_loadable`` is pure. ``loaded_library_paths`` is the small effectful part: it finds the
files of the host's ``DT_NEEDED`` libraries (and theirs) the way the dynamic loader does, and
remembers the answer while the files it was read from stay as they were.
"""

from __future__ import annotations

import glob
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.binary.demangle import demangle
from daemon.binary.program_index import base_name as _base_name
from daemon.binary.program_index import program_index
from daemon.binary.symbols import MACHO, WEAK, SymbolTable

RECAPTURE_ACTION = (
    "run `thinpatch capture` again for a fresh fat build: the running program neither exports"
    " nor loads these symbols, so the patch cannot bind to them"
)

# The glibc loader's trusted directories (x86_64 Debian multiarch first), searched after
# the RUNPATH and the ld.so cache.
DEFAULT_LIBRARY_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


@dataclass(frozen=True)
class LoadCheck:
    ok: bool
    missing: list[tuple[str, str]] = field(default_factory=list)  # (raw, demangled), sorted
    action: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "missing": [{"symbol": raw, "name": name} for raw, name in self.missing],
            "action": self.action,
        }

    def message(self) -> str:
        if self.ok:
            return "the patch will load"
        names = "\n".join(f"  {name}" for _, name in self.missing)
        return f"not hot-patchable: {len(self.missing)} symbol(s) would stay unresolved:\n{names}\n{self.action}"


def _display_name(name: str, file_format: str) -> str:
    readable = demangle(name)
    if readable == name and file_format == MACHO and name.startswith("_"):
        return name[1:]  # Mach-O prefixes C names with an underscore
    return readable


def check_loadable(
    patch: SymbolTable,
    host: SymbolTable,
    needed_libs_tables: Sequence[SymbolTable] = (),
) -> LoadCheck:
    """Every undefined symbol of ``patch`` must resolve to something the host exports, something
    a library loaded with the host exports, or something the patch defines itself. Weak
    undefined references may stay unresolved, as the loader allows.

    The host's and the libraries' export sets come from their program index (computed once
    per image); only the patch's own symbols are scanned per call, and its definitions only for
    a name no other image exports (the patch's table lists as undefined only what it lacks).
    """
    providers = [program_index(host).exported, *(program_index(t).exported for t in needed_libs_tables)]
    not_exported: dict[str, str] = {}  # raw name -> base name, of imports no other image exports
    for s in patch.imports():
        if s.binding == WEAK:
            continue
        name = s.normalised
        base = _base_name(name) if "@" in name else name
        for exported in providers:
            if base in exported:
                break
        else:
            not_exported.setdefault(s.name, base)
    missing: dict[str, str] = {}
    if not_exported:
        own = {_base_name(s.normalised) for s in patch.defined()}
        missing = {raw: base for raw, base in not_exported.items() if base not in own}
    if not missing:
        return LoadCheck(ok=True)
    pairs = sorted(
        ((raw, _display_name(base, patch.format)) for raw, base in missing.items()), key=lambda p: (p[1], p[0])
    )
    return LoadCheck(ok=False, missing=pairs, action=RECAPTURE_ACTION)


# --- finding the libraries (effectful) ---------------------------------------------------


def library_search_dirs(
    table: SymbolTable,
    origin: Path,
    env: Mapping[str, str] | None = None,
    ld_so_conf_dirs: Iterable[str] = (),
) -> list[str]:
    """Directories the loader searches for ``table``'s DT_NEEDED entries, in order (pure).

    DT_RPATH applies only when there is no DT_RUNPATH; LD_LIBRARY_PATH comes between them.
    """
    env = os.environ if env is None else env

    def expand(entry: str) -> str:
        return entry.replace("$ORIGIN", str(origin)).replace("${ORIGIN}", str(origin))

    dirs: list[str] = []
    if not table.runpath:
        dirs.extend(expand(p) for p in table.rpath)
    dirs.extend(p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p)
    dirs.extend(expand(p) for p in table.runpath)
    dirs.extend(ld_so_conf_dirs)
    dirs.extend(DEFAULT_LIBRARY_DIRS)
    return list(dict.fromkeys(dirs))  # each directory once, where it first appears


LD_SO_CONF = Path("/etc/ld.so.conf")


def read_ld_so_conf(path: Path = LD_SO_CONF) -> list[str]:
    """The directories listed in ld.so.conf, following ``include`` globs."""
    return _ld_so_conf(path)[0]


def _ld_so_conf(path: Path, depth: int = 0) -> tuple[list[str], list[str]]:
    """The directories listed in ld.so.conf, and the files and directories whose change could
    change them (each file read, each directory an ``include`` glob lists)."""
    dirs: list[str] = []
    looked_at = [str(path)]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return dirs, looked_at
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include ") and depth < 8:
            pattern = line.split(None, 1)[1]
            if not os.path.isabs(pattern):
                pattern = str(path.parent / pattern)
            looked_at.append(os.path.dirname(pattern))
            for included in sorted(glob.glob(pattern)):
                more, also = _ld_so_conf(Path(included), depth + 1)
                dirs.extend(more)
                looked_at.extend(also)
        elif not line.startswith("hwcap "):
            dirs.append(line)
    return dirs, looked_at


def find_library(name: str, dirs: Iterable[str]) -> Path | None:
    return _find_library(name, dirs)[0]


def _find_library(name: str, dirs: Iterable[str]) -> tuple[Path | None, list[str]]:
    """The library's file, and the directories searched for it (the last one holds it)."""
    if "/" in name:
        return (Path(name) if os.path.exists(name) else None), []
    searched = []
    for d in dirs:
        searched.append(d)
        candidate = Path(d) / name
        if candidate.is_file():
            return candidate, searched
    return None, searched


_FileIdentity = tuple[int, int, int, int] | None  # (device, inode, size, mtime), None: absent


def _identity(path: str) -> _FileIdentity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Search:
    found: tuple[Path, ...]
    unresolved: tuple[str, ...]
    # Every file and directory the answer was read from: a directory's mtime changes when an
    # entry is added, removed or renamed in it, a file's when it is rewritten.
    depends_on: tuple[tuple[str, _FileIdentity], ...]
    # False when the answer depends on what a stat can't witness (a path relative to the
    # working directory, a glob over directories).
    reusable: bool


class LibraryPathCache:
    """Answers of ``loaded_library_paths`` by the image's search inputs, each reused while
    every file and directory it was read from (ld.so.conf and its includes, the directories
    searched, the libraries found) is unchanged. Each patch asks again for the same libraries;
    the loader's configuration rarely changes, and is read again when it does."""

    def __init__(self, max_entries: int = 64) -> None:
        self._answers: OrderedDict[tuple[Any, ...], _Search] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> _Search | None:
        with self._lock:
            answer = self._answers.get(key)
        if answer is None or any(_identity(path) != identity for path, identity in answer.depends_on):
            return None
        return answer

    def put(self, key: tuple[Any, ...], answer: _Search) -> None:
        if not answer.reusable:
            return
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self._max_entries:
                self._answers.popitem(last=False)


_default_library_paths = LibraryPathCache()


def loaded_library_paths(
    host: SymbolTable,
    host_path: str | Path,
    read_table: Callable[[Path], SymbolTable],
    env: Mapping[str, str] | None = None,
    *,
    ld_so_conf: Path = LD_SO_CONF,
    cache: LibraryPathCache | None = _default_library_paths,
) -> tuple[list[Path], list[str]]:
    """The files of the libraries the loader maps with ``host`` (DT_NEEDED, breadth first, each
    library's own RUNPATH applied to its own needs), and the names it could not find.

    With a ``cache``, an answer found before for the same inputs is reused while nothing it
    was read from has changed."""
    env = os.environ if env is None else env
    uses_origin = any("$ORIGIN" in p or "${ORIGIN}" in p for p in (*host.runpath, *host.rpath))
    key = (
        host.needed,
        host.runpath,
        host.rpath,
        str(Path(host_path).resolve().parent) if uses_origin else None,
        env.get("LD_LIBRARY_PATH", ""),
        str(ld_so_conf),
    )
    answer = cache.get(key) if cache is not None else None
    if answer is None:
        answer = _search(host, host_path, read_table, env, ld_so_conf)
        if cache is not None:
            cache.put(key, answer)
    return list(answer.found), list(answer.unresolved)


def _search(
    host: SymbolTable,
    host_path: str | Path,
    read_table: Callable[[Path], SymbolTable],
    env: Mapping[str, str],
    ld_so_conf: Path,
) -> _Search:
    conf_dirs, looked_at = _ld_so_conf(ld_so_conf)
    reusable = not any(glob.has_magic(d) for d in looked_at)
    found: list[Path] = []
    unresolved: list[str] = []
    seen: set[str] = set()
    queue: list[tuple[str, SymbolTable, Path]] = [(n, host, Path(host_path).resolve().parent) for n in host.needed]
    while queue:
        name, parent, origin = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path, searched = _find_library(name, library_search_dirs(parent, origin, env, conf_dirs))
        looked_at.extend(searched)
        if "/" in name:
            looked_at.append(name)
            reusable = reusable and os.path.isabs(name)
        if path is None:
            unresolved.append(name)
            continue
        found.append(path)
        looked_at.append(str(path))
        table = read_table(path)
        queue.extend((n, table, path.resolve().parent) for n in table.needed)
    depends_on = tuple((p, _identity(p)) for p in dict.fromkeys(looked_at))
    return _Search(tuple(found), tuple(unresolved), depends_on, reusable)
