"""From captures to a verified patch: rebuild, read symbols, check it loads, jump table.

This is the one place that strings the pipeline together, for both the one-shot
`thinpatch patch` and the daemon. Its result is what clients receive in `patch-ready`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from capture.store import Captures, load_captures
from daemon.binary.demangle import demangle
from daemon.binary.jump_table import JumpTable, PatchReport, compute_jump_table, crate_of
from daemon.binary.load_check import LoadCheck, check_loadable, loaded_library_paths
from daemon.build.rebuild import MissingCapture, PatchBuild, build_patch, resolve_top
from daemon.build.session_cache import DEFAULT_KEEP, SessionLayout, default_session_root, open_session
from daemon.binary.symbol_cache import SymbolCache
from daemon.binary.symbols import DATA, LOCAL, SymbolTable, read_symbols

RECAPTURE = "Run `thinpatch capture` again: a fresh fat build exports what patches need."


class PatchRejected(Exception):
    """The patch was built but would not load into the running program."""

    def __init__(self, build: PatchBuild, check: LoadCheck, verify_ms: float):
        self.build = build
        self.check = check
        self.verify_ms = verify_ms
        self.missing_symbols = [name for _, name in check.missing]
        self.action = check.action or RECAPTURE
        shown = ", ".join(self.missing_symbols[:8]) + (" …" if len(self.missing_symbols) > 8 else "")
        self.reason = (
            f"the patch needs {len(self.missing_symbols)} symbol(s) the running program does not "
            f"export: {shown}"
        )
        super().__init__(f"not hot-patchable: {self.reason}. {self.action}")


@dataclass
class HostImage:
    """The running program's binary, parsed once per capture."""

    path: Path
    table: SymbolTable
    libraries: list[SymbolTable]
    unresolved_libraries: list[str]
    parse_ms: float


@dataclass
class PatchResult:
    workspace: str
    crate: str  # the program crate the library patches
    edited_crate: str
    lib: str
    patch_number: int
    jump_table: JumpTable
    report: PatchReport
    timings: dict[str, float]
    compiler_warnings: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        report = self.report.to_json()
        report["compiler_warnings"] = self.compiler_warnings
        return {
            "workspace": self.workspace,
            "crate": self.crate,
            "edited_crate": self.edited_crate,
            "lib": self.lib,
            "patch_number": self.patch_number,
            "jump_table": self.jump_table.to_json(),
            "report": report,
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def fresh_statics(host: SymbolTable, patch: SymbolTable, crates: set[str]) -> list[str]:
    """Statics of the rebuilt crates that the patch defines privately while the host keeps
    its copy private too: the patched code gets a fresh copy starting from the initial value.

    A `pub static` of a library crate is global in both images, so the patch binds to the
    host's copy and its running value is kept; those are not listed.
    """
    host_data = {s.normalised for s in host.defined(DATA)}
    fresh = set()
    for s in patch.defined(DATA):
        if s.binding != LOCAL or s.normalised not in host_data or s.size == 0:
            continue
        if not s.normalised.startswith(("_ZN", "_R")):
            continue  # compiler constants (anon.*, alloc_*) are read-only: a copy is harmless
        name = demangle(s.normalised)
        if crate_of(name) in crates and not _is_constant_data(name):
            fresh.add(name)
    return sorted(fresh)


def _is_constant_data(name: str) -> bool:
    # vtables, panic locations and promoted constants are immutable: copies behave the same.
    return any(part in name for part in ("vtable", "{{constant}}", "CALLSITE", "::{{closure}}"))


def read_host(path: Path, symbol_cache: SymbolCache, cache_dir: Path | None) -> HostImage:
    """Parse the program binary and the libraries the loader maps with it (blocking)."""
    started = time.perf_counter()
    table = symbol_cache.load(path, cache_dir)
    libs, unresolved = loaded_library_paths(table, path, lambda p: symbol_cache.load(p, cache_dir))
    libraries = [symbol_cache.load(p, cache_dir) for p in libs]
    return HostImage(path, table, libraries, unresolved, (time.perf_counter() - started) * 1000)


def host_binary(captures: Captures, top: str | None = None) -> Path:
    record = resolve_top(captures, top)
    link = captures.link_for(record.crate_name)
    if link is None:
        raise MissingCapture(
            f"no link line captured for {record.crate_name}. {RECAPTURE}"
            + "".join(f"\n  {w}" for w in captures.warnings)
        )
    path = Path(link.output)
    if not path.exists():
        raise MissingCapture(f"the captured program {path} no longer exists. {RECAPTURE}")
    return path


class Patcher:
    """Builds verified patches for one captured workspace; keeps the host parsed between patches."""

    def __init__(
        self,
        workspace: str | Path,
        capture_root: str | Path,
        *,
        scope: str | None = None,
        top: str | None = None,
        session_root: Path | None = None,
        keep: int = DEFAULT_KEEP,
        symbol_cache: SymbolCache | None = None,
    ):
        self.workspace = str(workspace)
        self.capture_root = Path(capture_root)
        self.scope = scope
        self.top = top  # the program's crate (record key); None: the newest captured top crate
        self.keep = keep
        self.symbol_cache = symbol_cache or SymbolCache()
        self.captures = self.reload()
        self.session: SessionLayout = open_session(
            session_root or default_session_root(self.capture_root, self.captures.scope)
        )
        self._host: HostImage | None = None

    @property
    def symbol_cache_dir(self) -> Path:
        return self.capture_root / "symbols"

    def reload(self) -> Captures:
        captures = load_captures(self.capture_root, self.scope)
        if not captures.rustc:
            raise MissingCapture(
                f"no captures in {self.capture_root}"
                + (f" (scope {self.scope})" if self.scope else "")
                + f". Run `thinpatch capture` in {self.workspace} first."
                + "".join(f"\n  {w}" for w in captures.warnings)
            )
        self.captures = captures
        self._host = None
        return captures

    async def host(self) -> HostImage:
        if self._host is None or not self._host.path.exists():
            path = host_binary(self.captures, self.top)
            self._host = await anyio.to_thread.run_sync(
                read_host, path, self.symbol_cache, self.symbol_cache_dir
            )
        return self._host

    async def patch(self, crate: str | None = None, *, rendered_ansi: bool = False) -> PatchResult:
        """Rebuild ``crate`` (default: the program's crate) into a verified patch.

        Raises the rebuild errors (MissingCapture, CompileError, LinkError, ToolNotFound,
        UnsupportedEdit) or PatchRejected.
        """
        started = time.perf_counter()
        host = await self.host()
        build = await build_patch(
            self.captures, crate, self.session, top=self.top, keep=self.keep, rendered_ansi=rendered_ansi
        )
        verify_started = time.perf_counter()
        table, report, check = await anyio.to_thread.run_sync(self._verify, host, build)
        verify_ms = (time.perf_counter() - verify_started) * 1000
        if not check.ok:
            try:
                build.library.unlink()  # never leave a library behind that would not load
            except FileNotFoundError:
                pass
            raise PatchRejected(build, check, verify_ms)
        total_ms = (time.perf_counter() - started) * 1000
        return PatchResult(
            workspace=self.workspace,
            crate=build.crate_name,
            edited_crate=build.edited_crate,
            lib=str(build.library),
            patch_number=build.patch_number,
            jump_table=table,
            report=report,
            timings={
                "rustc_ms": build.rustc_ms,
                "link_ms": build.link_ms,
                "verify_ms": verify_ms,
                "total_ms": total_ms,
            },
            compiler_warnings=[w.to_dict() for w in build.warnings],
        )

    def _verify(self, host: HostImage, build: PatchBuild) -> tuple[JumpTable, PatchReport, LoadCheck]:
        # The patch is new every time: parse it directly, don't fill the cache with it.
        patch = read_symbols(build.library)
        patch_libs, _ = loaded_library_paths(
            patch, build.library, lambda p: self.symbol_cache.load(p, self.symbol_cache_dir)
        )
        # Only libraries the host does not already load (libc, libgcc_s… would be scanned twice).
        loaded = {table.path for table in host.libraries}
        libraries = host.libraries + [
            table
            for table in (self.symbol_cache.load(p, self.symbol_cache_dir) for p in patch_libs)
            if table.path not in loaded
        ]
        check = check_loadable(patch, host.table, libraries)
        rebuilt = {c.crate_name for c in build.crates}
        table, report = compute_jump_table(host.table, patch, str(build.library), rebuilt)
        fresh = fresh_statics(host.table, patch, rebuilt)
        if fresh:
            report.warnings.extend(
                f"`{name}` is a private static of a binary crate: patched code uses a fresh copy that "
                "starts from its initial value. Move it into a library crate as a `pub static` to keep "
                "its running value across patches."
                for name in fresh
            )
        return table, report, check
