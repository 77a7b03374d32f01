"""Will the patch load into the running program? Decided from symbol tables, before any client
hears of the patch.

``check_loadable`` is pure. ``loaded_library_paths`` is the small effectful part: it finds the
files of the host's ``DT_NEEDED`` libraries (and theirs) the way the dynamic loader does.
"""

from __future__ import annotations

import glob
import os
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
    per image); only the patch's own symbols are scanned per call.
    """
    providers = [program_index(host).exported, *(program_index(t).exported for t in needed_libs_tables)]
    own = {_base_name(s.normalised) for s in patch.defined()}

    missing: dict[str, str] = {}
    for s in patch.imports():
        if s.binding == WEAK:
            continue
        base = _base_name(s.normalised)
        if base in own or any(base in exported for exported in providers):
            continue
        missing.setdefault(s.name, base)
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


def read_ld_so_conf(path: Path = Path("/etc/ld.so.conf"), _depth: int = 0) -> list[str]:
    """The directories listed in ld.so.conf, following ``include`` globs."""
    dirs: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return dirs
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include ") and _depth < 8:
            pattern = line.split(None, 1)[1]
            if not os.path.isabs(pattern):
                pattern = str(path.parent / pattern)
            for included in sorted(glob.glob(pattern)):
                dirs.extend(read_ld_so_conf(Path(included), _depth + 1))
        elif not line.startswith("hwcap "):
            dirs.append(line)
    return dirs


def find_library(name: str, dirs: Iterable[str]) -> Path | None:
    if "/" in name:
        return Path(name) if os.path.exists(name) else None
    for d in dirs:
        candidate = Path(d) / name
        if candidate.is_file():
            return candidate
    return None


def loaded_library_paths(
    host: SymbolTable,
    host_path: str | Path,
    read_table: Callable[[Path], SymbolTable],
    env: Mapping[str, str] | None = None,
) -> tuple[list[Path], list[str]]:
    """The files of the libraries the loader maps with ``host`` (DT_NEEDED, breadth first, each
    library's own RUNPATH applied to its own needs), and the names it could not find."""
    conf_dirs = read_ld_so_conf()
    found: list[Path] = []
    unresolved: list[str] = []
    seen: set[str] = set()
    queue: list[tuple[str, SymbolTable, Path]] = [(n, host, Path(host_path).resolve().parent) for n in host.needed]
    while queue:
        name, parent, origin = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        path = find_library(name, library_search_dirs(parent, origin, env, conf_dirs))
        if path is None:
            unresolved.append(name)
            continue
        found.append(path)
        table = read_table(path)
        queue.extend((n, table, path.resolve().parent) for n in table.needed)
    return found, unresolved
