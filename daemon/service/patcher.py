"""From captures to a verified patch: rebuild, read symbols, check it loads, jump table.

This is the one place that strings the pipeline together, for both the one-shot
`thinpatch patch` and the daemon. Its result is what clients receive in `patch-ready`.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from capture.rustc_args import codegen_value
from capture.store import CaptureRecord, Captures, CrateKey, load_captures
from daemon.analysis.baseline import Baseline, captured_objects
from daemon.analysis.code_prints import PrintCache, changed
from daemon.analysis.layout import FunctionFacts, LayoutUnknown, UnitDwarfMemo, check_functions
from daemon.analysis.program_types import ProgramTypes
from daemon.analysis.reach import analyse_reach
from daemon.analysis.unchanged_sections import unit_key
from daemon.analysis.verdicts import NEEDS_RESTART, Entry, LayoutFinding, SaveVerdict, judge, unknown_save
from daemon.binary.dwarf import DwarfError
from daemon.binary.elf_objects import ObjectFormatError
from daemon.binary.jump_table import JumpTable, PatchReport, compute_jump_table, crate_of
from daemon.binary.load_check import LoadCheck, check_loadable, loaded_library_paths
from daemon.binary.patch_symbols import read_patch_symbols
from daemon.binary.program_index import cached_demangle, program_index
from daemon.binary.symbol_cache import SymbolCache
from daemon.binary.symbols import DATA, FUNCTION, LOCAL, MACHO, STATIC, SymbolTable
from daemon.build.concurrency import beside
from daemon.build.crate_plans import resolve_crate, resolve_top
from daemon.build.errors import MissingCapture, UnsupportedEdit
from daemon.build.rebuild import CrateBuild, PatchBuild, build_patch
from daemon.build.refusals import no_symbol_table_refusal
from daemon.build.session_cache import (
    DEFAULT_KEEP,
    SessionLayout,
    default_session_root,
    open_session,
    prune_patches,
    read_edited_crates,
    record_edited_crates,
    target_os,
)
from daemon.socket.protocol import EntryPoint

log = structlog.get_logger("thinpatch.patcher")

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
            f"the patch needs {len(self.missing_symbols)} symbol(s) the running program does not export: {shown}"
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
    program: CrateKey  # the program crate the library patches
    edited: tuple[CrateKey, ...]  # the crates saved for this patch
    lib: str
    patch_number: int
    jump_table: JumpTable
    report: PatchReport
    timings: dict[str, float]
    compiler_warnings: list[dict[str, Any]] = field(default_factory=list)

    rebuilt_crates: list[str] = field(default_factory=list)  # every crate in the patch
    reused_crates: list[str] = field(default_factory=list)  # of those, linked from an earlier build
    verdict: SaveVerdict = field(default_factory=lambda: unknown_save("not analysed"))
    prints: dict[str, str] = field(default_factory=dict, repr=False)  # name -> print, for the next patch

    @property
    def edited_crate(self) -> str:
        """The saved crates' names, as people read them: ``core, store``."""
        return ", ".join(dict.fromkeys(key.name for key in self.edited))

    def to_json(self) -> dict[str, Any]:
        report = self.report.to_json()
        report["compiler_warnings"] = self.compiler_warnings
        report["rebuilt_crates"] = self.rebuilt_crates
        report["reused_crates"] = self.reused_crates
        return {
            "workspace": self.workspace,
            "crate": self.program.name,
            "edited_crate": self.edited_crate,
            "lib": self.lib,
            "patch_number": self.patch_number,
            "jump_table": self.jump_table.to_json(),
            "report": report,
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            **self.verdict.to_json(),
        }


def fresh_statics(host: SymbolTable, patch: SymbolTable, crates: set[str]) -> list[str]:
    """Statics of the rebuilt crates for which patched code uses a copy of its own, starting
    from the initial value, while the running program keeps its copy (demangled names).

    ELF: only statics the patch defines privately (a binary crate's private `static`). A
    `pub static` of a library crate is global in both images, so the patch binds to the
    program's copy and its running value is kept; those are not listed.
    Mach-O: every static the patch defines, global or not. The compiler addresses a static
    defined in the same image directly (PC-relative, no GOT), so the patch's code is bound to
    its own copy before any linker or loader could choose the program's.
    """
    host_data = program_index(host).data_names  # computed once per program binary
    every_definition = patch.format == MACHO
    prefix = patch.symbol_prefix
    fresh = set()
    for s in patch.defined(DATA):
        if s.normalised not in host_data or s.size == 0:
            continue
        if s.binding != LOCAL and not every_definition:
            continue
        mangled = s.normalised[len(prefix) :] if prefix and s.normalised.startswith(prefix) else s.normalised
        if not mangled.startswith(("_ZN", "_R")):
            continue  # compiler constants (anon.*, alloc_*) are read-only: a copy is harmless
        name = cached_demangle(mangled)  # the same statics in every patch
        if crate_of(name) in crates and not _is_constant_data(name):
            fresh.add(name)
    return sorted(fresh)


def fresh_static_warning(name: str, patch_format: str) -> str:
    """What the patch report says about a static listed by :func:`fresh_statics`."""
    if patch_format == MACHO:
        return (
            f"`{name}` is a static of a crate this patch rebuilds: on macOS, patched code uses the "
            "patch's own copy, which starts from its initial value (the compiler addresses a static "
            "the patch defines directly, so it can't be bound to the running program's copy). Keep "
            "state that must survive patches in a crate that is not rebuilt: one you don't edit while "
            "the program runs and that doesn't depend on one you edit. Or restart the program."
        )
    return (
        f"`{name}` is a private static of a binary crate: patched code uses a fresh copy that "
        "starts from its initial value. Move it into a library crate as a `pub static` to keep "
        "its running value across patches."
    )


def _is_constant_data(name: str) -> bool:
    # vtables, panic locations and promoted constants are immutable: copies behave the same.
    return any(part in name for part in ("vtable", "{{constant}}", "CALLSITE", "::{{closure}}"))


def _analysis_cost(run: dict[str, float], link_ms: float) -> dict[str, float]:
    """What the analysis beside the link cost the patch: its CPU time, and how long it ran
    on after the link was done (taking the link to start as soon as rustc was done, a little
    earlier than it does: so at most this much)."""
    if "done_at" not in run:
        return {}
    linked_at = run["link_from"] + link_ms / 1000
    return {
        "analysis_cpu_ms": run["cpu_ms"],
        "analysis_after_link_ms": max(0.0, (run["done_at"] - linked_at) * 1000),
    }


def _patchable(record: CaptureRecord) -> bool:
    return record.kind != "build-script" and "proc-macro" not in record.crate_types


def read_host(path: Path, symbol_cache: SymbolCache, cache_dir: Path | None) -> HostImage:
    """Parse the program binary and the libraries the loader maps with it (blocking)."""
    started = time.perf_counter()
    table = symbol_cache.load(path, cache_dir)
    libs, unresolved = loaded_library_paths(table, path, lambda p: symbol_cache.load(p, cache_dir))
    libraries = [symbol_cache.load(p, cache_dir) for p in libs]
    return HostImage(path, table, libraries, unresolved, (time.perf_counter() - started) * 1000)


def host_binary(captures: Captures, top: CrateKey | None = None) -> Path:
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


def restart_result(
    workspace: str,
    program: CrateKey,
    edited: Sequence[CrateKey],
    crates: tuple[CrateBuild, ...],
    build: PatchBuild | None,
    analysed: tuple[SaveVerdict, dict[str, str]],
    started: float,
) -> PatchResult:
    """A save that only a restart runs: its verdict and timings, and no library (a link that
    finished before the verdict leaves none behind: it is never sent)."""
    if build is not None:
        build.library.unlink(missing_ok=True)
    verdict, prints = analysed
    compiled = [c for c in crates if not c.reused]
    rustc_ms = (max(c.finished_at for c in compiled) - min(c.started_at for c in compiled)) * 1000 if compiled else 0.0
    return PatchResult(
        workspace=workspace,
        program=program,
        edited=tuple(edited),
        lib="",
        patch_number=0,
        jump_table=JumpTable("", {}, 0, 0),
        report=PatchReport(0),
        timings={
            "rustc_ms": rustc_ms,
            "link_ms": build.link_ms if build is not None else 0.0,  # stopped at the verdict
            "verify_ms": 0.0,
            "analysis_ms": sum(verdict.timings.values()),
            "total_ms": (time.perf_counter() - started) * 1000,
        },
        compiler_warnings=[w.to_dict() for c in crates for w in c.warnings],
        rebuilt_crates=[c.key.name for c in crates],
        reused_crates=[c.key.name for c in crates if c.reused],
        verdict=verdict,
        prints=prints,
    )


def load_patch_captures(capture_root: Path, scope: str | None, workspace: str) -> Captures:
    """One scope's captures, or MissingCapture naming why there are none (reads files)."""
    captures = load_captures(capture_root, scope)
    if not captures.rustc:
        raise MissingCapture(
            f"no captures in {capture_root}"
            + (f" (scope {scope})" if scope else "")
            + f". Run `thinpatch capture` in {workspace} first."
            + "".join(f"\n  {w}" for w in captures.warnings)
        )
    return captures


class Patcher:
    """Builds verified patches for one captured workspace; keeps the host parsed between patches.

    Patches are cumulative: a hot-patch runtime replaces its whole jump table with each patch,
    so every patch holds every crate edited since the program was captured (remembered in the
    session, per program), each compiled against the others' newest metadata.

    Made from state already read (:func:`open_patcher` reads it); the disk is touched only
    when a patch is built.
    """

    def __init__(
        self,
        workspace: str | Path,
        captures: Captures,
        session: SessionLayout,
        *,
        top: CrateKey | None = None,
        keep: int = DEFAULT_KEEP,
        symbol_cache: SymbolCache | None = None,
    ):
        self.workspace = str(workspace)
        self.captures = captures
        self.capture_root = captures.capture_root
        self.session = session
        self.top = top  # the program's crate; None: the newest captured top crate
        self.keep = keep
        self.symbol_cache = symbol_cache or SymbolCache()
        self._host: HostImage | None = None
        self._edited: dict[CrateKey, set[CrateKey]] = {}  # program -> crates edited since capture
        self._fresh: set[CrateKey] = set()  # crates this patcher compiled, unchanged since
        self._stale: set[CrateKey] = set()  # crates saved since their last successful compile
        self._prints = PrintCache()  # object prints, kept between patches: rustc rewrites few units
        self._dwarf = UnitDwarfMemo()  # the DWARF of the units a layout check read last
        self._baseline: Baseline | None = None  # the files the running program was linked from
        self._functions_at: dict[int, str] | None = None  # the program's function symbols by address
        self._main_at = 0  # the static address of the program's `main`: entry offsets count from it
        self._delivered: dict[str, str] | None = None  # prints of the last patch sent to the program
        self._program_layouts: ProgramTypes | None = None  # its types, from its debug info
        self._frozen = False  # its long-lived objects moved out of the collector's way

    @property
    def symbol_cache_dir(self) -> Path:
        return self.capture_root / "symbols"

    async def host(self) -> HostImage:
        # Read once per capture: the running program is that file's build. cargo removes it
        # when it starts to rebuild the crate (a capture build while the program runs), and
        # patches for the program still running stay what they were.
        if self._host is None:
            path = host_binary(self.captures, self.top)
            host = await anyio.to_thread.run_sync(read_host, path, self.symbol_cache, self.symbol_cache_dir)
            if not program_index(host.table).static_symbols:  # no need to decode the symbols
                # only exported names left: patches would map next to nothing and change nothing
                raise UnsupportedEdit(no_symbol_table_refusal(str(path)))
            self._host = host
        return self._host

    def _edited_since_capture(self, program: CaptureRecord) -> tuple[set[CrateKey], float]:
        link = self.captures.link_for(program.crate_name)
        captured_at = link.recorded_at if link is not None else 0.0
        remembered = read_edited_crates(self.session, program.key, captured_at)
        return self._edited.setdefault(program.key, set()) | remembered, captured_at

    async def patch(
        self, crates: Sequence[CrateKey] = (), *, rendered_ansi: bool = False, entries: Sequence[EntryPoint] = ()
    ) -> PatchResult:
        """A verified patch for the saved ``crates`` (default: the program's crate). It also
        holds every crate edited earlier since the capture, so applying it alone gives all
        edits made so far. ``entries`` are the running processes' hot entry points: the
        result's verdict says which changes they reach.

        Raises the rebuild errors (MissingCapture, CompileError, LinkError, ToolNotFound,
        UnsupportedEdit) or PatchRejected.
        """
        started = time.perf_counter()
        host = await self.host()
        top = resolve_top(self.captures, self.top)
        records = [resolve_crate(self.captures, key) for key in dict.fromkeys(crates)] or [top]
        requested = [r.key for r in records]
        edited, captured_at = self._edited_since_capture(top)
        # a crate that can never be in a patch (proc-macro, build script) is refused for this
        # build only, not carried into every later one
        edited |= {r.key for r in records if _patchable(r)}
        self._edited[top.key] = edited
        self._stale |= set(requested)
        try:
            record_edited_crates(self.session, top.key, captured_at, edited)
        except OSError:
            pass  # remembered in memory; the build reports an unwritable session itself
        analysed: list[tuple[SaveVerdict, dict[str, str]]] = []
        analysis_run: dict[str, float] = {}

        def analyse(compiled: tuple[CrateBuild, ...]) -> None:  # in a thread, while the linker runs
            # the link began after rustc's end; with every crate reused (no rustc), just before this call
            analysis_run["link_from"] = max((c.finished_at for c in compiled), default=0.0) or time.perf_counter()
            cpu = time.thread_time()
            try:
                analysed.append(self._analyse(host, top.key, compiled, list(entries)))
            except Exception as exc:  # a bug here must not cost the patch: its verdict says so
                log.exception("change analysis failed", program=top.key.label)
                analysed.append((unknown_save(f"the change analysis failed ({exc!r})"), {}))
            analysis_run["cpu_ms"] = (time.thread_time() - cpu) * 1000
            analysis_run["done_at"] = time.perf_counter()

        # Only a patch needs the link and its checks: a save only a restart can run is
        # decided as soon as the analysis is, and the linker is stopped.
        restart = anyio.CancelScope()
        compiled_crates: list[tuple[CrateBuild, ...]] = []

        def analyse_then_decide(compiled: tuple[CrateBuild, ...]) -> None:
            compiled_crates.append(compiled)
            analyse(compiled)
            if analysed[0][0].verdict == NEEDS_RESTART:
                anyio.from_thread.run_sync(restart.cancel)

        built: PatchBuild | None = None
        with restart:
            built = await build_patch(
                self.captures,
                [*requested, *sorted(edited - set(requested))],
                self.session,
                top=self.top,
                rendered_ansi=rendered_ansi,
                reuse=self._fresh - self._stale,
                while_linking=analyse_then_decide,
                os_name=target_os(top.target),
            )
        self._fresh = {c.key for c in (built.crates if built else compiled_crates[0])}
        self._stale = set()
        await anyio.lowlevel.checkpoint()  # a newer save's cancellation, if any, wins over the verdict
        if analysed and analysed[0][0].verdict == NEEDS_RESTART:
            return restart_result(self.workspace, top.key, requested, compiled_crates[0], built, analysed[0], started)
        assert built is not None  # the build is cancelled only for a restart
        build = built

        async def verify() -> tuple[JumpTable, PatchReport, LoadCheck, float]:
            verify_started = time.perf_counter()
            table, report, check = await anyio.to_thread.run_sync(self._verify, host, build)
            return table, report, check, (time.perf_counter() - verify_started) * 1000

        # older libraries go while this one is checked, off the save → patch-ready path
        table, report, check, verify_ms = await beside(self._prune, verify)
        if not check.ok:
            try:
                build.library.unlink()  # never leave a library behind that would not load
            except FileNotFoundError:
                pass
            raise PatchRejected(build, check, verify_ms)
        verdict, prints = analysed[0] if analysed else (unknown_save("the change analysis did not run"), {})
        total_ms = (time.perf_counter() - started) * 1000
        return PatchResult(
            workspace=self.workspace,
            program=build.program,
            edited=tuple(requested),
            lib=str(build.library),
            patch_number=build.patch_number,
            jump_table=table,
            report=report,
            timings={
                "rustc_ms": build.rustc_ms,
                "link_ms": build.link_ms,
                "verify_ms": verify_ms,
                "analysis_ms": sum(verdict.timings.values()),
                **{f"analysis_{step}": ms for step, ms in verdict.timings.items()},
                **_analysis_cost(analysis_run, build.link_ms),
                "total_ms": total_ms,
            },
            compiler_warnings=[w.to_dict() for w in build.warnings],
            rebuilt_crates=[c.key.name for c in build.crates],
            reused_crates=[c.key.name for c in build.crates if c.reused],
            verdict=verdict,
            prints=prints,
        )

    def _optimised(self, program: CrateKey) -> bool:
        record = self.captures.rustc.get(program)
        level = codegen_value(record.args, "opt-level") if record is not None else None
        return level not in (None, "0")

    def _program_types(self, baseline: Baseline) -> ProgramTypes:
        """The running program's workspace types, read from the objects it was linked from
        where a patch needs them (the whole table kept beside the capture, under a digest of
        those objects)."""
        if self._program_layouts is None:
            paths = [p for paths in baseline.objects.values() for p in paths]
            self._program_layouts = ProgramTypes(paths, self.capture_root / "layouts")
        return self._program_layouts

    def _layouts(
        self, baseline: Baseline, crates: Sequence[CrateBuild], functions: Sequence[str]
    ) -> tuple[dict[str, list[LayoutFinding]], str | None, dict[str, tuple[str, int]]]:
        """Per changed function, the types it uses whose layout differs from the running
        program's; why that could not be checked; and where each function is declared."""
        if not functions:
            return {}, None, {}
        wanted = set(functions)
        try:
            program = self._program_types(baseline)
            paths = [
                path
                for crate in crates
                for path in crate.objects
                if any(prints.nodes.keys() & wanted for prints in self._prints.prints(path))
            ]
            objects = [o for path in paths for o in self._prints.objects(path)]  # parsed once, with the prints
            facts, result = check_functions(
                program.of_units(unit_key(o.path) for o in objects),
                objects,
                functions,
                complete=program.complete,
                memo=self._dwarf,
            )
        except (OSError, ObjectFormatError, DwarfError, IndexError, ValueError) as exc:
            return {}, f"the debug info can't be read ({exc}), so type layouts could not be compared", {}
        workspace = os.path.join(self.workspace, "")
        places = {
            name: (f.file[len(workspace) :] if f.file.startswith(workspace) else f.file, f.line)
            for name, f in facts.items()
            if isinstance(f, FunctionFacts) and f.file and f.line is not None
        }
        if isinstance(result, LayoutUnknown):
            return {}, f"type layouts could not be compared: {result.why}", places
        changed_types = {c.type: c for c in result}
        layout: dict[str, list[LayoutFinding]] = {}
        for name, f in facts.items():
            if isinstance(f, FunctionFacts):
                found = [
                    LayoutFinding(t, "; ".join(changed_types[t].details))
                    for t in sorted(f.types & changed_types.keys())
                ]
                if found:
                    layout[name] = found
        unattributed = changed_types.keys() - {t.type_name for found in layout.values() for t in found}
        if unattributed and functions:  # a type seen only through another's generics: the first function
            first = sorted(functions)[0]
            layout.setdefault(first, []).extend(
                LayoutFinding(t, "; ".join(changed_types[t].details)) for t in sorted(unattributed)
            )
        return layout, None, places

    def delivered(self, result: PatchResult) -> None:
        """``result`` was sent to the program: later patches say what changed since."""
        self._delivered = result.prints

    def _baseline_of(self, program: CrateKey) -> Baseline:
        if self._baseline is None:
            link = self.captures.link_for(program.name)
            self._baseline = captured_objects(self.captures, link) if link is not None else Baseline()
        return self._baseline

    def _entries(self, host: HostImage, entries: Sequence[EntryPoint]) -> list[Entry]:
        """The reported entry points as the program's function symbols (static address: the
        program's `main` plus the offset the process measured from its own `main`)."""
        if self._functions_at is None:
            by_address: dict[int, str] = {}
            for s in host.table.symbols:
                if s.defined and s.kind == FUNCTION and s.table == STATIC and s.address:
                    by_address.setdefault(s.address, s.normalised)
            self._functions_at = by_address
            mains = program_index(host.table).main_addresses
            self._main_at = next(iter(mains)) if len(set(mains)) == 1 else -(1 << 62)  # no main: nothing resolves
        resolved = []
        for e in dict.fromkeys((e.offset, e.kind, e.name, e.returns) for e in entries):
            symbol = self._functions_at.get(self._main_at + e[0])
            if symbol is not None:
                resolved.append(Entry(symbol, e[1], e[2], e[3]))
        return resolved

    def _analyse(
        self, host: HostImage, program: CrateKey, crates: Sequence[CrateBuild], entries: list[EntryPoint]
    ) -> tuple[SaveVerdict, dict[str, str]]:
        """What the patch's compiled ``crates`` change against the running program, and
        whether a patch can carry it."""
        started = time.perf_counter()
        baseline = self._baseline_of(program)
        keys = [c.key for c in crates]
        for key in keys:
            if key not in baseline.objects:
                why = baseline.unavailable.get(key, "it is not part of the captured link")
                return unknown_save(f"the program's code of {key.name} can't be compared: {why}"), {}
        try:
            old = self._prints.merged_snapshot(baseline, (p for key in keys for p in baseline.objects[key]))
            new = self._prints.merged(p for c in crates for p in c.objects)
        except (OSError, ValueError) as exc:
            return unknown_save(f"the objects to compare can't be read: {exc}"), {}
        if not self._frozen:
            # The program's prints and objects stay as long as this patcher: hundreds of
            # thousands of objects that every full collection would walk again (120 ms of
            # CPU each, measured on the large workspace, in the middle of some later patch).
            gc.freeze()
            self._frozen = True
        printed = time.perf_counter()
        changes = changed(old, new)
        resolved = self._entries(host, entries)
        redirected = [e.symbol for e in resolved if e.redirected]
        unredirected = [e.symbol for e in resolved if not e.redirected]
        reach = analyse_reach(new, redirected, changes) if resolved else None
        closure_reach = analyse_reach(new, unredirected, changes) if unredirected else None
        current = new.digests()
        layout, layout_unknown, places = self._layouts(baseline, crates, changes.functions())
        verdict = judge(
            changes,
            reach,
            entries=resolved,
            unredirected_reach=closure_reach,
            layout=layout,
            layout_unknown=layout_unknown,
            places=places,
            optimised=self._optimised(program),
            workspace_crates={key.name for key in self.captures.rustc},
            previous=self._delivered,
            current=current,
            timings={"prints_ms": (printed - started) * 1000, "judge_ms": (time.perf_counter() - printed) * 1000},
        )
        return verdict, current

    def _prune(self) -> None:
        try:
            prune_patches(self.session, self.keep)
        except OSError as exc:  # a full or read-only cache: the patch itself is fine
            log.warning("could not remove old patch libraries", session=str(self.session.root), error=str(exc))

    def _verify(self, host: HostImage, build: PatchBuild) -> tuple[JumpTable, PatchReport, LoadCheck]:
        # The patch is new every time: read it directly, don't fill the cache with it.
        patch = read_patch_symbols(build.library)

        def load(path: Path) -> SymbolTable:
            return self.symbol_cache.load(path, self.symbol_cache_dir)

        patch_libs, _ = loaded_library_paths(patch, build.library, load)
        # Only libraries the host does not already load (libc, libgcc_s… would be scanned twice):
        # first by the path the host's were found at (remembered, no search), then by file.
        host_libs = set(loaded_library_paths(host.table, host.path, load)[0])
        loaded = {table.path for table in host.libraries}
        libraries = host.libraries + [
            table for table in (load(p) for p in patch_libs if p not in host_libs) if table.path not in loaded
        ]
        check = check_loadable(patch, host.table, libraries)
        rebuilt = {c.key.name for c in build.crates}
        table, report = compute_jump_table(host.table, patch, str(build.library), rebuilt)
        fresh = fresh_statics(host.table, patch, rebuilt)
        report.warnings.extend(fresh_static_warning(name, patch.format) for name in fresh)
        return table, report, check


def open_patcher(
    workspace: str | Path,
    capture_root: str | Path,
    *,
    scope: str | None = None,
    top: CrateKey | None = None,
    session_root: Path | None = None,
    keep: int = DEFAULT_KEEP,
    symbol_cache: SymbolCache | None = None,
) -> Patcher:
    """A patcher for one scope's captures (default: the newest scope): reads the captures and
    opens the session cache. Raises MissingCapture when nothing is captured there."""
    captures = load_patch_captures(Path(capture_root), scope, str(workspace))
    session = open_session(session_root or default_session_root(Path(capture_root), captures.scope))
    return Patcher(workspace, captures, session, top=top, keep=keep, symbol_cache=symbol_cache)
