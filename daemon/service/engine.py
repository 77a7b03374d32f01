"""The daemon's engine: watches captured workspaces, builds patches, publishes events.

One ``ServedWorkspace`` per captured workspace holds its programs (every captured bin, each
profile and target, each with its patcher), its source map, its watcher and its scheduler. The ``Engine`` finds workspaces through
the capture registry (or is given them), notices fresh captures, and answers the socket
server's requests. Every outcome, good or bad, becomes an event; nothing here raises
out of a build.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import structlog

from capture.store import Captures, CrateKey, capture_lock_path, captures_dir, list_scopes, load_captures
from daemon.binary.build_id import process_build_id, process_executable
from daemon.binary.symbol_cache import SymbolCache
from daemon.build.errors import CompileError, LinkError, MissingCapture, RebuildError
from daemon.service.depinfo import MANIFEST_NAMES, build_source_map, changed_kinds, crate_sources, read_depinfo_file
from daemon.build.session_cache import default_session_root, open_session
from daemon.service.patcher import Patcher, PatchRejected
from daemon.service.programs import RESTART_HINT, Identity, Program, identify, program_crates, read_programs
from daemon.service.scheduler import WARM_UP, BuildRequest, WorkspaceScheduler
from daemon.service.watcher import DEFAULT_DEBOUNCE_MS, SourceWatcher, content_digest, filter_watch_set, git_ignored
from daemon.service.workspaces import CapturedWorkspace, registered_workspaces
from daemon.socket import protocol
from daemon.socket.protocol import RequestError, Subscription

log = structlog.get_logger("thinpatch.engine")

Publish = Callable[[dict[str, Any]], Any]
# How many subscribed processes run the binary with this build ID (set by the server side).
CountReceivers = Callable[[str], int]

DISCOVERY_INTERVAL_S = 1.0
MAX_RESULTS_KEPT = 32  # patch ids whose per-process outcomes status still shows


def capture_stamp(capture_root: Path) -> tuple[int, ...]:
    """Changes whenever a capture writes a link line: a new fat build of the program."""
    stamps = []
    for path in sorted(captures_dir(capture_root).glob("*/link/*.json")):
        try:
            stamps.append(path.stat().st_mtime_ns)
        except OSError:
            pass
    return tuple(stamps)


def capture_in_progress(capture_root: Path) -> bool:
    """A `thinpatch capture` is still building: its records and binaries are not final yet."""
    try:
        fd = os.open(capture_lock_path(capture_root), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if it was taken
    return False


def sources_edited_since_capture(by_file: dict[str, list[CrateKey]], captures: Captures) -> set[str]:
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


def damaged_records(capture_root: Path, warnings: str) -> list[str]:
    """The record files that ``warnings`` (the store's messages) name."""
    return sorted(str(p) for p in captures_dir(capture_root).glob("*/*/*.json") if str(p) in warnings)


class Scanned(NamedTuple):
    found: CapturedWorkspace
    key: str  # the workspace's real path
    stamp: tuple[int, ...]
    prepared: Any  # Loaded | RebuildError for a session about to (re)start, else None


@dataclass
class EngineOptions:
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    on_busy: str = "restart"
    keep_patches: int = 16
    force_polling: bool | None = None
    warm_up: bool = True  # compile each program once when its session starts


@dataclass
class ServedProgram:
    """One captured binary of a workspace, and the patches built for it."""

    program: Program
    patcher: Patcher
    crates: set[CrateKey]  # the crates its binary is built from
    last_patch: dict[str, Any] | None = None
    # patch id -> pid -> {"applied": bool, "message": str | None}, newest patches only
    results: dict[Any, dict[int, dict[str, Any]]] = field(default_factory=dict)

    def record_result(self, patch_id: Any, pid: int, applied: bool, message: str | None) -> None:
        self.results.setdefault(patch_id, {})[pid] = {"applied": applied, "message": message}
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
                    "applied": sorted(pid for pid, r in outcomes.items() if r["applied"]),
                    "failed": [
                        {"pid": pid, "message": r["message"]} for pid, r in sorted(outcomes.items()) if not r["applied"]
                    ],
                }
                if last
                else None
            ),
        }


def load_programs(
    workspace: str, capture_root: Path, *, keep: int, symbol_cache: SymbolCache
) -> tuple[dict[str, ServedProgram], list[str], dict[str, Captures]]:
    """Every patchable program under ``capture_root`` with its patcher, the reasons other top
    crates are not programs, and each scope's captures (blocking: reads files).

    Raises MissingCapture when nothing at all is captured there."""
    programs, skipped, by_scope = read_programs(workspace, capture_root)
    notes = [s.reason for s in skipped]
    if not by_scope:
        # Name the records that could not be read: they are why nothing is captured.
        skipped = [w for scope in list_scopes(capture_root) for w in load_captures(capture_root, scope).warnings]
        raise MissingCapture(
            f"no captures in {capture_root}. Run `thinpatch capture` in {workspace} first."
            + "".join(f"\n  {w}" for w in skipped)
        )
    served = {}
    for program in programs:
        captures = by_scope[program.scope]
        session = open_session(default_session_root(capture_root, captures.scope))
        patcher = Patcher(workspace, captures, session, top=program.crate, keep=keep, symbol_cache=symbol_cache)
        served[program.key] = ServedProgram(program, patcher, program_crates(by_scope[program.scope], program.crate))
    return served, notes, by_scope


# What load_programs gives: the programs, notes on top crates that are not programs, captures by scope.
Loaded = tuple[dict[str, "ServedProgram"], list[str], dict[str, Captures]]


@dataclass
class ServedWorkspace:
    found: CapturedWorkspace
    programs: dict[str, ServedProgram]
    options: EngineOptions
    publish: Publish
    ids: itertools.count
    count_receivers: CountReceivers = lambda build_id: 0
    notes: list[str] = field(default_factory=list)
    scopes: dict[str, Captures] = field(default_factory=dict)
    watcher: SourceWatcher | None = None
    scheduler: WorkspaceScheduler | None = None
    last_patch: dict[str, Any] | None = None
    last_outcome: str | None = None
    stamp: tuple[int, ...] = ()
    builds: int = 0
    source_map: Any = None
    manifest_digests: dict[str, str | None] = field(default_factory=dict)
    _cancel: anyio.CancelScope | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.found.workspace)

    def emit(self, event: dict[str, Any]) -> None:
        """Publish, never raise: a failed send must not stop the workspace's watcher."""
        try:
            self.publish(event)
        except Exception:
            log.exception("could not publish event", workspace=self.name, event_type=event.get("type"))

    @property
    def captures(self) -> list[Captures]:
        """Each capture scope's records (a scope is one profile and target)."""
        return list(self.scopes.values())

    def load_source_map(self) -> None:
        target_dir = str(self.found.capture_root.parent)
        crates = []
        compile_time_only: list[str] = []
        records = {(c.scope, key): r for c in self.captures for key, r in c.rustc.items()}
        for record in records.values():
            deps = read_depinfo_file(record.dep_info, record.cwd) if record.dep_info else []
            if not deps and record.src:
                deps = [record.src]
            if record.kind in ("build-script", "proc-macro"):
                # Code that runs inside cargo/rustc, not in the program: a patch can't carry it.
                compile_time_only.extend(d for d in deps if not d.startswith(target_dir + os.sep))
                continue
            crates.append(
                crate_sources(
                    record.key,
                    deps,
                    record.manifest_dir,
                    self.name,
                    target_dir,
                )
            )
        smap = build_source_map(crates)
        for path in compile_time_only:
            smap.manifests.setdefault(path, [])
        files = smap.watched_files()
        ignored = git_ignored(sorted(files), self.name) if os.path.isdir(self.name) else set()
        keep = filter_watch_set(files, [target_dir], ignored)
        smap.by_file = {f: v for f, v in smap.by_file.items() if f in keep}
        # A symlinked source is edited through its target: watch the target under the same crates.
        for path, crates in list(smap.by_file.items()):
            real = os.path.realpath(path)
            if real != path:
                smap.by_file.setdefault(real, list(crates))
        smap.manifests = {f: v for f, v in smap.manifests.items() if f in keep or f.endswith(("Cargo.toml", "Cargo.lock", "build.rs"))}
        self.source_map = smap

    def status(self) -> dict[str, Any]:
        captures = self.captures
        return {
            "workspace": self.name,
            "capture_root": str(self.found.capture_root),
            "scope": ", ".join(sorted({c.scope for c in captures})),
            "programs": [sp.status() for sp in self.programs.values()],
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
        targets = [
            sp for sp in self.programs.values() if any(c in sp.crates for c in request.crates)
        ]
        if not self.programs:
            self._no_program(request)
            return
        if not targets:
            log.info("edit is in no captured program", workspace=self.name, crates=sorted(request.crates))
            return
        for served in targets:
            edited = frozenset(c for c in request.crates if c in served.crates)
            await self.build_program(served, edited, request.files)

    async def build_program(
        self, served: ServedProgram, crates: frozenset[CrateKey], files: frozenset[str]
    ) -> None:
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
                result = await served.patcher.patch(sorted(crates))
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
                # a patch for one binary: only the processes running it receive it
                for_build_id=program.build_id or None,
                subscribers=self.count_receivers(program.build_id) if program.build_id else 0,
            )
            served.last_patch = event
            self.last_patch = event
            self.last_outcome = "patch-ready"
            self.emit(event)
            bound.info("patch ready", outcome="patch-ready", lib=result.lib, **event["timings"])

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
            except Exception as exc:  # noqa: BLE001 - a warm-up never fails anything
                log.info("warm-up build failed", workspace=self.name, program=served.program.label, error=str(exc)[:200])
                continue
            finally:
                with anyio.CancelScope(shield=True):
                    await self.learn_sources(served)
            log.info("warmed up", workspace=self.name, program=served.program.label,
                     ms=round((time.perf_counter() - started) * 1000))

    async def learn_sources(self, served: ServedProgram) -> None:
        """Watch every file rustc read in the last patch build (a new `mod`, a new
        include_str! input), so its edits patch without a new capture."""
        if self.source_map is None or self.watcher is None:
            return
        records = dict(served.patcher.captures.rustc)
        layout = served.patcher.session
        target_dir = str(self.found.capture_root.parent)

        def read() -> dict[str, set[CrateKey]]:
            found: dict[str, set[CrateKey]] = {}
            for key in served.crates:
                record = records.get(key)
                if record is None:
                    continue
                path = layout.depinfo_path(record.crate_name, record.kind)
                for source in read_depinfo_file(path, record.cwd):
                    found.setdefault(source, set()).add(record.key)
            return found

        read_now = await anyio.to_thread.run_sync(read)
        candidates = {
            f for f in read_now
            if f not in self.source_map.by_file and f not in self.source_map.manifests
            and os.path.basename(f) not in MANIFEST_NAMES
        }
        new = filter_watch_set(candidates, [target_dir])
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

    def on_changes(self, paths: set[str]) -> None:
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
        assert self.scheduler is not None
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

    async def run(self) -> None:
        """Watch and build until cancelled."""

        def read_sources() -> None:  # dep-info files, git, manifests: not on the event loop
            self.load_source_map()
            self.manifest_digests = {m: content_digest(m) for m in self.source_map.manifests}

        await anyio.to_thread.run_sync(read_sources)
        self.watcher = SourceWatcher(
            self.source_map.watched_files(), debounce_ms=self.options.debounce_ms, force_polling=self.options.force_polling
        )
        self.scheduler = WorkspaceScheduler(self.build, policy=self.options.on_busy)
        log.info("serving workspace", workspace=self.name, files=len(self.watcher.files))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.scheduler.run)
                # Saves made while no daemon was watching (after the capture, before this
                # session) would otherwise become the baseline and never reach the program.
                edited = set().union(
                    *(sources_edited_since_capture(self.source_map.by_file, c) for c in self.captures)
                )
                if edited:
                    log.info("sources changed since the capture", workspace=self.name, files=len(edited))
                    self.on_changes(edited)
                elif self.options.warm_up and self.programs:
                    tops = frozenset(sp.program.crate for sp in self.programs.values())
                    self.scheduler.submit(BuildRequest(self.name, tops, frozenset(), reason=WARM_UP))
                async for changed in self.watcher.changes():
                    self.on_changes(changed)
        finally:
            if self.watcher is not None:
                self.watcher.stop()


class Engine:
    """Serves every captured workspace; implements the socket server's Engine protocol."""

    def __init__(
        self,
        publish: Publish | None = None,
        *,
        workspaces: list[str | Path] | None = None,
        options: EngineOptions | None = None,
        env: dict[str, str] | None = None,
    ):
        self.publish: Publish = publish or (lambda event: None)
        self.fixed = [Path(w).resolve() for w in workspaces] if workspaces else None
        self.options = options or EngineOptions()
        self.env = env
        self.served: dict[str, ServedWorkspace] = {}
        self.problems: dict[str, str] = {}
        self.retired: dict[str, Program] = {}  # build ID -> program of an earlier session
        self.count_receivers: CountReceivers = lambda build_id: 0
        self.symbol_cache = SymbolCache()
        self._ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopped_at_stamp: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ server protocol

    def status(self) -> dict[str, Any]:
        return {
            "workspaces": [ws.status() for ws in self.served.values()],
            "problems": [{"workspace": w, "message": m} for w, m in sorted(self.problems.items())],
            "on_busy": self.options.on_busy,
            "debounce_ms": self.options.debounce_ms,
        }

    def _find(self, workspace: str | None, real: str | None = None) -> ServedWorkspace:
        if workspace is None:
            if len(self.served) == 1:
                return next(iter(self.served.values()))
            raise RequestError(
                "name the workspace: the daemon serves "
                + (", ".join(sorted(self.served)) or "no workspace yet (run `thinpatch capture`)")
            )
        key = real if real is not None else os.path.realpath(workspace)
        if key not in self.served:
            raise RequestError(
                f"workspace {workspace} is not served; served: {', '.join(sorted(self.served)) or 'none'}. "
                "Run `thinpatch capture` in it first."
            )
        return self.served[key]

    async def request_rebuild(self, workspace: str | None, crate: str | None) -> None:
        # realpath touches the filesystem once per component: never on the event loop.
        real = None if workspace is None else await anyio.to_thread.run_sync(os.path.realpath, workspace)
        ws = self._find(workspace, real)
        if crate is None:
            keys = {sp.program.crate for sp in ws.programs.values()}
        else:
            records = [c.named(crate) for c in ws.captures]
            found = [r for r in records if r is not None]
            if not found:
                known = sorted({key.label for c in ws.captures for key in c.rustc})
                raise RequestError(f"crate {crate!r} is not captured in {ws.name}; captured: {', '.join(known)}")
            keys = {found[0].key}
        assert ws.scheduler is not None
        ws.scheduler.submit(BuildRequest(ws.name, frozenset(keys), frozenset(), reason="rebuild"))

    def programs(self) -> list[Program]:
        return [sp.program for ws in self.served.values() for sp in ws.programs.values()]

    async def identify(self, subscription: Subscription) -> tuple[Subscription, list[dict[str, Any]]]:
        """Which program a subscriber runs. Observers (no pid, no build ID) get everything; a
        process gets only its own binary's patches, or one `not-patchable` event saying why not."""
        pid, build_id = subscription.pid, subscription.build_id
        if pid is None and build_id is None:
            return subscription, []
        executable = None
        if pid is not None:
            executable, read_id = await anyio.to_thread.run_sync(
                lambda: (process_executable(pid), None if build_id else process_build_id(pid))
            )
            build_id = build_id or read_id
        who: Identity = identify(
            pid=pid, build_id=build_id, executable=executable, programs=self.programs(), retired=self.retired
        )
        # An unidentified process still gets a build ID no patch carries: it must receive none.
        matched = replace(subscription, build_id=who.build_id or f"unidentified-{pid}")
        if who.program is not None:
            return matched, []
        event = protocol.not_patchable(reason=who.reason, message=who.message, for_pid=pid)
        self.publish(dict(event))  # observers (`thinpatch watch`) see it too; the subscriber isn't one yet
        return matched, [event]

    def record_patch_result(self, subscription: Subscription | None, fields: dict[str, Any]) -> None:
        """A process reports whether it applied a patch; observers hear about it."""
        pid = fields.get("pid") or (subscription.pid if subscription else None)
        if pid is None:
            raise RequestError("say which process this result is from: send `pid`, or subscribe with it first")
        patch_id = fields["id"]
        for ws in self.served.values():
            for served in ws.programs.values():
                current = served.last_patch is not None and served.last_patch["id"] == patch_id
                if current or patch_id in served.results:
                    served.record_result(patch_id, pid, fields["applied"], fields.get("message"))
                    log.info(
                        "patch applied" if fields["applied"] else "patch failed in the program",
                        workspace=ws.name, program=served.program.label, patch=patch_id, pid=pid,
                        message=fields.get("message"),
                    )
                    ws.emit(
                        protocol.patch_result(
                            patch_id=patch_id,
                            workspace=ws.name,
                            pid=pid,
                            applied=fields["applied"],
                            message=fields.get("message"),
                            program=served.program.describe(),
                        )
                    )
                    return
        raise RequestError(f"no patch with id {patch_id!r} is current; results are taken for the latest patches only")

    def current_state_for(self, subscription: Subscription) -> list[dict[str, Any]]:
        events = []
        for ws in self.served.values():
            for served in ws.programs.values():
                if served.last_patch and subscription.wants(served.last_patch):
                    events.append(dict(served.last_patch))
        return events

    # ------------------------------------------------------------------ lifecycle

    def candidates(self) -> list[CapturedWorkspace]:
        if self.fixed is not None:
            from daemon.service.workspaces import NoCapture, find_captured_workspace

            found = []
            for w in self.fixed:
                try:
                    found.append(find_captured_workspace(w, self.env))
                except NoCapture as exc:
                    self.problems[str(w)] = str(exc)
            return found
        return registered_workspaces(self.env)

    def prepare(self, key: str, capture_root: Path) -> Loaded | RebuildError:
        """A session's programs and captures (reads files: a worker thread's job), or why not."""
        try:
            return load_programs(key, capture_root, keep=self.options.keep_patches, symbol_cache=self.symbol_cache)
        except RebuildError as exc:
            return exc

    def _start(self, found: CapturedWorkspace, prepared: Loaded | RebuildError | None = None) -> ServedWorkspace | None:
        key = os.path.realpath(found.workspace)
        loaded = self.prepare(key, found.capture_root) if prepared is None else prepared
        if isinstance(loaded, RebuildError):
            exc = loaded
            if self.problems.get(key) != str(exc):  # once per problem, not once per discovery round
                self.publish(
                    protocol.full_rebuild_required(
                        workspace=key, reason=f"{exc}", files=damaged_records(found.capture_root, str(exc))
                    )
                )
            self.problems[key] = str(exc)
            return None
        programs, notes, scopes = loaded
        self.problems.pop(key, None)
        ws = ServedWorkspace(
            found=CapturedWorkspace(Path(key), found.capture_root),
            programs=programs,
            options=self.options,
            publish=self.publish,
            ids=self._ids,
            count_receivers=lambda build_id: self.count_receivers(build_id),
            notes=notes,
            scopes=scopes,
            stamp=capture_stamp(found.capture_root),
        )
        self.served[key] = ws
        assert self._tg is not None
        self._tg.start_soon(self._run_workspace, ws)
        return ws

    def _report_damaged_records(self, ws: ServedWorkspace | None) -> None:
        """A session that starts on records it could not read serves only part of the
        workspace: say so, or edits to the crates they describe would pass in silence."""
        warnings = sorted({w for c in ws.captures for w in c.warnings}) if ws is not None else []
        if ws is None or not warnings:
            return
        damaged = damaged_records(ws.found.capture_root, "\n".join(warnings))
        log.warning("capture records skipped", workspace=ws.name, records=len(warnings))
        ws.emit(
            protocol.full_rebuild_required(
                workspace=ws.name,
                reason="some capture records could not be read, so patches for their crates can't be "
                "built:\n  " + "\n  ".join(warnings) + "\nRun `thinpatch capture` and restart the program.",
                files=damaged,
            )
        )

    async def _run_workspace(self, ws: ServedWorkspace) -> None:
        with anyio.CancelScope() as scope:
            ws._cancel = scope
            try:
                await ws.run()
            except Exception as exc:
                log.error("workspace stopped", workspace=ws.name, error=repr(exc))
                self.problems[ws.name] = f"stopped watching: {exc}. Run `thinpatch capture` again to serve it."
                self.served.pop(ws.name, None)
                # Not restarted until a new capture: a damaged one would fail the same way every second.
                self._stopped_at_stamp[ws.name] = ws.stamp

    def _stop(self, key: str) -> None:
        ws = self.served.pop(key, None)
        if ws is not None:
            if ws.watcher is not None:
                ws.watcher.stop()
            if ws._cancel is not None:
                ws._cancel.cancel()

    def stop_watchers(self) -> None:
        for ws in self.served.values():
            if ws.watcher is not None:
                ws.watcher.stop()

    def scan(
        self, served: dict[str, tuple[int, ...]] | None = None, stopped: dict[str, tuple[int, ...]] | None = None
    ) -> list[Scanned]:
        """The filesystem half of discovery (run in a worker thread): candidates, their real
        paths and capture stamps, and for each session about to (re)start, its patcher.
        ``served``/``stopped`` are snapshots of the stamps the loop knows."""
        entries = []
        known = served if served is not None else {key: ws.stamp for key, ws in self.served.items()}
        for found in self.candidates():
            key = os.path.realpath(found.workspace)
            if capture_in_progress(found.capture_root):
                # Reload once the capture has linked every binary; meanwhile nothing changes.
                if key in known:
                    entries.append(Scanned(found, key, known[key], None))
                continue
            stamp = capture_stamp(found.capture_root)
            prepared = None
            if served is not None:
                starts = key not in served and (stopped or {}).get(key) != stamp
                if starts or (key in served and stamp and stamp != served[key]):
                    prepared = self.prepare(key, found.capture_root)
            entries.append(Scanned(found, key, stamp, prepared))
        return entries

    async def scan_in_thread(self) -> list[Scanned]:
        served = {key: ws.stamp for key, ws in self.served.items()}
        return await anyio.to_thread.run_sync(self.scan, served, dict(self._stopped_at_stamp))

    def discover(self, scanned: list[Scanned] | None = None) -> None:
        """Start new workspaces; restart the session of any workspace with a fresh capture;
        stop serving registered workspaces whose registry entry is gone (deleted or re-created
        directories are not the workspace that was captured)."""
        scanned = self.scan() if scanned is None else scanned
        if self.fixed is None:
            for key in set(self.served) - {entry.key for entry in scanned}:
                log.info("workspace no longer registered: stopped serving it", workspace=key)
                self._stop(key)
        for found, key, stamp, prepared in scanned:
            ws = self.served.get(key)
            if ws is None:
                if key in self._stopped_at_stamp and self._stopped_at_stamp[key] == stamp:
                    continue
                self._stopped_at_stamp.pop(key, None)
                self._report_damaged_records(self._start(found, prepared))
                continue
            if stamp != ws.stamp and stamp:
                log.info("fresh capture: new session", workspace=key)
                self._stop(key)
                started = self._start(found, prepared)
                self._retire(ws, started)
                self.publish(
                    protocol.session_reset(
                        workspace=key,
                        reason="a new `thinpatch capture` rebuilt the program; restart it to apply new patches",
                    )
                )
                self._report_damaged_records(started)

    def _retire(self, old: ServedWorkspace, new: ServedWorkspace | None) -> None:
        """Processes still running an earlier session's binaries must restart: tell each once."""
        current = {sp.program.build_id for sp in new.programs.values()} if new else set()
        for served in old.programs.values():
            program = served.program
            if program.build_id and program.build_id not in current:
                self.retired[program.build_id] = program
                self.publish(
                    protocol.not_patchable(
                        workspace=old.name,
                        for_build_id=program.build_id,
                        reason="old-session",
                        message=f"a new `thinpatch capture` rebuilt {program.label}; a process still running "
                        f"the earlier binary gets no more patches. {RESTART_HINT}",
                        program=program.describe(),
                    )
                )

    async def run(self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self.discover(await self.scan_in_thread())
            task_status.started(self)
            while True:
                await anyio.sleep(DISCOVERY_INTERVAL_S)
                try:
                    self.discover(await self.scan_in_thread())
                except Exception as exc:
                    log.error("workspace discovery failed", error=repr(exc))
