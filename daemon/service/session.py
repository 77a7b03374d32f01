"""One captured workspace, served: its programs, source map, watcher, scheduler and builds.

Takes what discovery read from the capture store (a ``LoadedWorkspace``: the programs, notes on
top crates that are not programs, each scope's captures), a patcher factory (one patcher per
program) and a watcher factory (over the source map's files); tests pass fakes for both. Gives
events through ``publish``: on a save, build-started then patch-ready, build-failed or
patch-rejected for each program built from the saved crates; full-rebuild-required when a
manifest changes. Nothing raises out of a build.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import structlog

from capture.store import Captures, CrateKey
from daemon.analysis.verdicts import NEEDS_RESTART
from daemon.build.errors import CompileError, LinkError, RebuildError
from daemon.build.session_cache import SessionLayout
from daemon.service.depinfo import SourceMap, changed_kinds
from daemon.service.patcher import PatchRejected, PatchResult
from daemon.service.programs import Program, program_crates
from daemon.service.scheduler import WARM_UP, BuildRequest, WorkspaceScheduler
from daemon.service.sources import (
    patch_build_sources,
    read_source_map,
    sources_edited_since_capture,
    unwatched_sources,
)
from daemon.service.watcher import content_digest
from daemon.service.workspaces import CapturedWorkspace
from daemon.socket import protocol
from daemon.socket.protocol import EntryPoint, Event, PatchId

log = structlog.get_logger("thinpatch.engine")

Publish = Callable[[Event], object]
# How many subscribed processes run the binary with this build ID (set by the server side).
CountReceivers = Callable[[str], int]
EntryPoints = Callable[[str], list[EntryPoint]]  # a binary's build ID -> its processes' hot entry points

MAX_RESULTS_KEPT = 32  # patch ids whose per-process outcomes status still shows


class PatchBuilder(Protocol):
    """What a session asks of a program's patcher (``patcher.Patcher``)."""

    @property
    def captures(self) -> Captures: ...

    @property
    def session(self) -> SessionLayout: ...

    async def patch(self, crates: Sequence[CrateKey] = (), *, entries: Sequence[EntryPoint] = ()) -> PatchResult: ...

    def delivered(self, result: PatchResult) -> None: ...


class Watcher(Protocol):
    """What a session asks of its source watcher (``watcher.SourceWatcher``)."""

    @property
    def armed(self) -> anyio.Event: ...

    @property
    def files(self) -> frozenset[str]: ...

    def changes(self) -> AsyncIterator[set[str]]: ...

    def watch_more(self, files: Iterable[str]) -> set[str]: ...

    def stop(self) -> None: ...


# A patcher for one program, from its scope's captures (may read or create its session cache).
PatcherFactory = Callable[[Program, Captures], PatchBuilder]
# A watcher over these files.
WatcherFactory = Callable[[Iterable[str]], Watcher]


@dataclass(frozen=True)
class LoadedWorkspace:
    """A workspace as read from its capture store."""

    programs: list[Program]
    notes: list[str]  # why the other top crates are not programs
    scopes: dict[str, Captures]  # each scope's captures (a scope is one profile and target)


@dataclass(frozen=True)
class PatchOutcome:
    """What one process reported about one patch."""

    applied: bool
    message: str | None


@dataclass
class ServedProgram:
    """One captured binary of a workspace, and the patches built for it."""

    program: Program
    patcher: PatchBuilder
    crates: set[CrateKey]  # the crates its binary is built from
    last_patch: Event | None = None  # the last patch-ready event, as published
    # patch id -> pid -> what that process reported, newest patches only
    results: dict[PatchId, dict[int, PatchOutcome]] = field(default_factory=dict)

    def is_current(self, patch_id: PatchId) -> bool:
        """A patch whose results are still taken: the last one, or one status still shows."""
        current = self.last_patch is not None and self.last_patch["id"] == patch_id
        return current or patch_id in self.results

    def record_result(self, patch_id: PatchId, pid: int, outcome: PatchOutcome) -> None:
        self.results.setdefault(patch_id, {})[pid] = outcome
        while len(self.results) > MAX_RESULTS_KEPT:
            self.results.pop(next(iter(self.results)))

    def status(self) -> dict[str, Any]:
        last = self.last_patch
        outcomes = self.results.get(last["id"], {}) if last else {}
        return {
            **self.program.describe(),
            "crate": self.program.crate.label,
            "last_patch": (
                {
                    "id": last["id"],
                    "lib": last.get("lib"),
                    "subscribers": last.get("subscribers", 0),
                    "applied": sorted(pid for pid, r in outcomes.items() if r.applied),
                    "failed": [
                        {"pid": pid, "message": r.message} for pid, r in sorted(outcomes.items()) if not r.applied
                    ],
                }
                if last
                else None
            ),
        }


class WorkspaceSession:
    """Serves one captured workspace from one capture until cancelled or stopped.

    Made from state already read (the patcher factory may open session caches: build it off
    the event loop); ``run`` reads the source map, then watches and builds.
    """

    def __init__(
        self,
        found: CapturedWorkspace,
        loaded: LoadedWorkspace,
        *,
        make_patcher: PatcherFactory,
        make_watcher: WatcherFactory,
        publish: Publish,
        ids: Iterator[int],
        count_receivers: CountReceivers = lambda build_id: 0,
        entry_points: EntryPoints = lambda build_id: [],
        on_busy: str = "restart",
        warm_up: bool = True,
    ) -> None:
        self.found = found
        self.notes = list(loaded.notes)
        self.scopes = dict(loaded.scopes)
        self.programs: dict[str, ServedProgram] = {}
        for program in loaded.programs:
            captures = loaded.scopes[program.scope]
            patcher = make_patcher(program, captures)
            self.programs[program.key] = ServedProgram(program, patcher, program_crates(captures, program.crate))
        self.make_watcher = make_watcher
        self.publish = publish
        self.ids = ids
        self.count_receivers = count_receivers
        self.entry_points = entry_points
        self.on_busy = on_busy
        self.warm_up_builds = warm_up  # compile each program once when the session starts
        self.stamp: tuple[int, ...] = ()  # the capture's stamp when the session started
        self.watcher: Watcher | None = None
        self.scheduler: WorkspaceScheduler | None = None
        self.source_map: SourceMap | None = None
        self.manifest_digests: dict[str, str | None] = {}
        self.last_patch: Event | None = None
        self.last_outcome: str | None = None
        self.builds = 0
        self._cancel: anyio.CancelScope | None = None

    @property
    def name(self) -> str:
        return str(self.found.workspace)

    @property
    def captures(self) -> list[Captures]:
        """Each capture scope's records (a scope is one profile and target)."""
        return list(self.scopes.values())

    @property
    def target_dir(self) -> str:
        return str(self.found.capture_root.parent)

    def emit(self, event: Event) -> None:
        """Publish, never raise: a failed send must not stop the workspace's watcher."""
        try:
            self.publish(event)
        except Exception:
            log.exception("could not publish event", workspace=self.name, event_type=event.get("type"))

    def status(self) -> dict[str, Any]:
        captures = self.captures
        return {
            "workspace": self.name,
            "capture_root": str(self.found.capture_root),
            "scope": ", ".join(sorted({c.scope for c in captures})),
            "programs": [{**sp.status(), "entry_points": self._entry_point_count(sp)} for sp in self.programs.values()],
            "notes": list(self.notes),
            "crates": sorted({key.label for c in captures for key in c.rustc}),
            "watched_files": len(self.source_map.watched_files()) if self.source_map else 0,
            "watching": bool(self.watcher and self.watcher.armed.is_set()),
            "busy": bool(self.scheduler and self.scheduler.busy),
            "builds": self.builds,
            "last_outcome": self.last_outcome,
            "capture_warnings": sorted({w for c in captures for w in c.warnings}),
            "last_patch": (
                {k: self.last_patch[k] for k in ("id", "crate", "lib", "timings") if k in self.last_patch}
                if self.last_patch
                else None
            ),
        }

    def _entry_point_count(self, served: ServedProgram) -> int:
        """How many hot entry points the processes running this binary reported."""
        return len(self.entry_points(served.program.build_id)) if served.program.build_id else 0

    def rebuild(self, crates: Iterable[CrateKey]) -> None:
        """Build these crates' patches now, as if they were saved (`thinpatch rebuild`)."""
        assert self.scheduler is not None
        self.scheduler.submit(BuildRequest(self.name, frozenset(crates), frozenset(), reason="rebuild"))

    # ------------------------------------------------------------------ builds

    def pick_crate(self, crates: frozenset[CrateKey]) -> CrateKey | None:
        """The crate to rebuild: the edited library furthest from the program, else the program.

        A library rebuild also rebuilds every crate between it and the program."""
        if not crates:
            return None
        libs = sorted(c for c in crates if c.kind != "bin")
        return libs[0] if libs else sorted(crates)[0]

    async def build(self, request: BuildRequest) -> None:
        """One patch for every program built from an edited crate, each for that binary only."""
        if request.reason == WARM_UP:
            await self.warm_up()
            return
        targets = [sp for sp in self.programs.values() if any(c in sp.crates for c in request.crates)]
        if not self.programs:
            self._no_program(request)
            return
        if not targets:
            log.info("edit is in no captured program", workspace=self.name, crates=sorted(request.crates))
            return
        for served in targets:
            edited = frozenset(c for c in request.crates if c in served.crates)
            await self.build_program(served, edited, request.files)

    async def build_program(self, served: ServedProgram, crates: frozenset[CrateKey], files: frozenset[str]) -> None:
        build_id = next(self.ids)
        chosen = self.pick_crate(crates)
        crate_label = chosen.name if chosen else "?"
        program = served.program
        self.builds += 1
        self.emit(
            protocol.build_started(
                build_id=build_id, workspace=self.name, crate=crate_label, files=files, program=program.describe()
            )
        )
        bound = log.bind(workspace=self.name, program=program.label, crate=crate_label, build=build_id)
        try:
            # every crate of this program saved in this burst: one patch holds them all
            try:
                entries = self.entry_points(program.build_id) if program.build_id else []
                result = await served.patcher.patch(sorted(crates), entries=entries)
            finally:
                with anyio.CancelScope(shield=True):
                    await self.learn_sources(served)
        except CompileError as exc:
            diagnostics = [d.to_dict() for d in exc.diagnostics.diagnostics]
            self._failed(build_id, crate_label, str(exc), diagnostics, program)
            bound.info("build failed", outcome="compile-error", errors=len(exc.diagnostics.errors))
        except PatchRejected as exc:
            self.last_outcome = "patch-rejected"
            self.emit(
                protocol.patch_rejected(
                    build_id=build_id,
                    workspace=self.name,
                    crate=crate_label,
                    reason=exc.reason,
                    missing_symbols=exc.missing_symbols,
                    action=exc.action,
                    program=program.describe(),
                )
            )
            bound.info("patch rejected", outcome="rejected", missing=len(exc.missing_symbols))
        except RebuildError as exc:
            self._failed(build_id, crate_label, str(exc), [], program)
            bound.info("build failed", outcome="link-error" if isinstance(exc, LinkError) else type(exc).__name__)
        except anyio.get_cancelled_exc_class():
            bound.info("build superseded by a newer edit", outcome="cancelled")
            raise
        except Exception as exc:  # a bug or an OS error: report it, keep serving
            bound.exception("build crashed")
            self._failed(build_id, crate_label, f"internal error while building the patch: {exc!r}", [], program)
        else:
            data = result.to_json()  # once: the jump table's map can hold thousands of entries
            if result.verdict.verdict == NEEDS_RESTART:
                # never sent as a patch: a layout change would corrupt the running program's data
                self.last_outcome = "restart-required"
                self.emit(
                    protocol.restart_required(
                        build_id=build_id,
                        workspace=self.name,
                        crate=data["crate"],
                        reason=result.verdict.reason or "a change a patch can't carry",
                        changes=data["changes"],
                        timings=data["timings"],
                        program=program.describe(),
                        for_build_id=program.build_id or None,
                    )
                )
                bound.info("restart required", outcome="restart-required", reason=result.verdict.reason)
                return
            event = protocol.patch_ready(
                build_id=build_id,
                workspace=self.name,
                crate=data["crate"],
                edited_crate=data["edited_crate"],
                lib=data["lib"],
                jump_table=data["jump_table"],
                report=data["report"],
                timings=data["timings"],
                program=program.describe(),
                verdict=data["verdict"],
                verdict_reason=data.get("reason"),
                changes=data["changes"],
                # a patch for one binary: only the processes running it receive it
                for_build_id=program.build_id or None,
                subscribers=self.count_receivers(program.build_id) if program.build_id else 0,
            )
            served.last_patch = event
            served.patcher.delivered(result)
            self.last_patch = event
            self.last_outcome = "patch-ready"
            self.emit(event)
            bound.info("patch ready", outcome="patch-ready", lib=result.lib, verdict=result.verdict.verdict,
                       **data["timings"])

    async def warm_up(self) -> None:
        """Build each program's patch once, unpublished: rustc's incremental state for the patch
        build and the program's symbol index are then ready, and the first real save costs what
        later ones do (instead of a whole-crate compile). Anything going wrong here is only
        logged: the first real save reports it."""
        for served in self.programs.values():
            started = time.perf_counter()
            try:
                await served.patcher.patch()
            except anyio.get_cancelled_exc_class():
                raise  # a real save came first
            except Exception as exc:  # a warm-up never fails anything: the first real save reports it
                log.info(
                    "warm-up build failed", workspace=self.name, program=served.program.label, error=str(exc)[:200]
                )
                continue
            finally:
                with anyio.CancelScope(shield=True):
                    await self.learn_sources(served)
            log.info(
                "warmed up",
                workspace=self.name,
                program=served.program.label,
                ms=round((time.perf_counter() - started) * 1000),
            )

    async def learn_sources(self, served: ServedProgram) -> None:
        """Watch every file rustc read in the last patch build (a new `mod`, a new
        include_str! input), so its edits patch without a new capture."""
        if self.source_map is None or self.watcher is None:
            return
        records = dict(served.patcher.captures.rustc)
        read_now = await anyio.to_thread.run_sync(patch_build_sources, records, served.crates, served.patcher.session)
        new = unwatched_sources(read_now, self.source_map, self.target_dir)
        for path in new:
            self.source_map.by_file[path] = sorted(read_now[path])
        added = self.watcher.watch_more(new)
        if added:
            log.info("watching new source files", workspace=self.name, files=sorted(added))

    def _no_program(self, request: BuildRequest) -> None:
        """Edits while no program is patchable (its link record damaged or gone) fail visibly."""
        build_id = next(self.ids)
        crate = sorted(request.crates)[0].name if request.crates else "?"
        self.emit(protocol.build_started(build_id=build_id, workspace=self.name, crate=crate, files=request.files))
        warnings = sorted({w for c in self.captures for w in c.warnings})
        self._failed(
            build_id,
            crate,
            f"no program in {self.name} can be patched:"
            + "".join(f"\n  {n}" for n in self.notes + warnings)
            + "\nRun `thinpatch capture` and restart the program.",
            [],
            None,
        )

    def _failed(
        self, build_id: int, crate: str, message: str, diagnostics: list[dict[str, Any]], program: Program | None
    ) -> None:
        self.last_outcome = "build-failed"
        self.emit(
            protocol.build_failed(
                build_id=build_id,
                workspace=self.name,
                crate=crate,
                message=message,
                diagnostics=diagnostics,
                program=program.describe() if program else None,
            )
        )

    # ------------------------------------------------------------------ watching

    def on_changes(self, paths: set[str]) -> None:
        assert self.source_map is not None and self.scheduler is not None
        by_crate, manifests = changed_kinds(paths, self.source_map)
        # A manifest back to the content the session started with (an edit undone, a
        # restored checkout) matches the running program: no full rebuild for it.
        manifests = [m for m in manifests if content_digest(m) != self.manifest_digests.get(m)]
        if manifests:
            self.emit(
                protocol.full_rebuild_required(
                    workspace=self.name, reason=self._manifest_reason(manifests), files=manifests
                )
            )
            return
        if not by_crate:
            return
        files = frozenset(f for fs in by_crate.values() for f in fs)
        self.scheduler.submit(BuildRequest(self.name, frozenset(by_crate), files))

    def _manifest_reason(self, manifests: list[str]) -> str:
        names = ", ".join(sorted(os.path.basename(m) for m in manifests))
        if all(os.path.exists(m) for m in manifests):
            return (
                f"{names} changed: a patch can't carry dependency, feature, build-script or proc-macro changes. "
                "Run `thinpatch capture` and restart the program."
            )
        where = "" if os.path.isdir(self.name) else f" (the workspace directory {self.name} was deleted or moved)"
        return (
            f"{names} {'is' if len(manifests) == 1 else 'are'} gone{where}: patches can't be built until "
            "they are back. If the workspace moved, run `thinpatch capture` in its new place and restart the program."
        )

    def stop_watching(self) -> None:
        """End the watch at once (a cancelled watcher would wait out its OS poll timeout)."""
        if self.watcher is not None:
            self.watcher.stop()

    def stop(self) -> None:
        """Stop serving: the watcher ends, a running build is cancelled and ``run`` returns."""
        self.stop_watching()
        if self._cancel is not None:
            self._cancel.cancel()

    async def run(self) -> None:
        """Watch and build until cancelled or stopped."""
        with anyio.CancelScope() as self._cancel:
            await self._serve()

    async def _serve(self) -> None:
        def read_sources() -> tuple[SourceMap, dict[str, str | None]]:  # dep-info, git, manifests
            smap = read_source_map(self.name, self.target_dir, self.captures)
            return smap, {m: content_digest(m) for m in smap.manifests}

        smap, self.manifest_digests = await anyio.to_thread.run_sync(read_sources)
        self.source_map = smap
        watcher = self.watcher = self.make_watcher(smap.watched_files())
        scheduler = self.scheduler = WorkspaceScheduler(self.build, policy=self.on_busy)
        log.info("serving workspace", workspace=self.name, files=len(watcher.files))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(scheduler.run)
                # Saves made while no daemon was watching (after the capture, before this
                # session) would otherwise become the baseline and never reach the program.
                edited = set().union(*(sources_edited_since_capture(smap.by_file, c) for c in self.captures))
                if edited:
                    log.info("sources changed since the capture", workspace=self.name, files=len(edited))
                    self.on_changes(edited)
                elif self.warm_up_builds and self.programs:
                    tops = frozenset(sp.program.crate for sp in self.programs.values())
                    scheduler.submit(BuildRequest(self.name, tops, frozenset(), reason=WARM_UP))
                async for changed in watcher.changes():
                    self.on_changes(changed)
        finally:
            watcher.stop()
