"""The daemon's engine: watches captured workspaces, builds patches, publishes events.

One ``ServedWorkspace`` per captured workspace holds its patcher (captures + host symbols),
its source map, its watcher and its scheduler. The ``Engine`` finds workspaces through
the capture registry (or is given them), notices fresh captures, and answers the socket
server's requests. Every outcome, good or bad, becomes an event; nothing here raises
out of a build.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from capture.store import captures_dir, rustc_key
from daemon.service.depinfo import build_source_map, changed_kinds, crate_sources, read_depinfo_file
from daemon.service.patcher import Patcher, PatchRejected
from daemon.socket.protocol import RequestError, Subscription
from daemon.build.rebuild import CompileError, LinkError, RebuildError
from daemon.service.scheduler import BuildRequest, WorkspaceScheduler
from daemon.service.watcher import DEFAULT_DEBOUNCE_MS, SourceWatcher, content_digest, filter_watch_set, git_ignored
from daemon.service.workspaces import CapturedWorkspace, registered_workspaces

log = structlog.get_logger("thinpatch.engine")

Publish = Callable[[dict[str, Any]], Any]

DISCOVERY_INTERVAL_S = 1.0



def capture_stamp(capture_root: Path) -> tuple[int, ...]:
    """Changes whenever a capture writes a link line: a new fat build of the program."""
    stamps = []
    for path in sorted(captures_dir(capture_root).glob("*/link/*.json")):
        try:
            stamps.append(path.stat().st_mtime_ns)
        except OSError:
            pass
    return tuple(stamps)


def sources_edited_since_capture(by_file: dict[str, list[tuple[str, str]]], captures: Any) -> set[str]:
    """Source files modified after the rustc invocation of a crate that reads them was recorded."""
    edited = set()
    for path, crates in by_file.items():
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        for crate, kind in crates:
            record = captures.rustc.get(rustc_key(crate, kind))
            if record is not None and mtime > record.recorded_at:
                edited.add(path)
                break
    return edited


@dataclass
class EngineOptions:
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    on_busy: str = "restart"
    keep_patches: int = 16
    force_polling: bool | None = None


@dataclass
class ServedWorkspace:
    found: CapturedWorkspace
    patcher: Patcher
    options: EngineOptions
    publish: Publish
    ids: itertools.count
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

    def load_source_map(self) -> None:
        captures = self.patcher.captures
        target_dir = str(self.found.capture_root.parent)
        crates = []
        compile_time_only: list[str] = []
        for record in captures.rustc.values():
            dep_info = record.data.get("dep_info")
            deps = read_depinfo_file(dep_info, record.cwd) if dep_info else []
            if not deps and record.data.get("src"):
                deps = [record.data["src"]]
            if record.kind in ("build-script", "proc-macro"):
                # Code that runs inside cargo/rustc, not in the program: a patch can't carry it.
                compile_time_only.extend(d for d in deps if not d.startswith(target_dir + os.sep))
                continue
            crates.append(
                crate_sources(
                    record.crate_name,
                    record.kind,
                    deps,
                    record.data.get("manifest_dir"),
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
        smap.manifests = {f: v for f, v in smap.manifests.items() if f in keep or f.endswith(("Cargo.toml", "Cargo.lock", "build.rs"))}
        self.source_map = smap

    def status(self) -> dict[str, Any]:
        captures = self.patcher.captures
        return {
            "workspace": self.name,
            "capture_root": str(self.found.capture_root),
            "scope": captures.scope,
            "crates": sorted(captures.rustc),
            "watched_files": len(self.source_map.watched_files()) if self.source_map else 0,
            "watching": bool(self.watcher and self.watcher.armed.is_set()),
            "busy": bool(self.scheduler and self.scheduler.busy),
            "builds": self.builds,
            "last_outcome": self.last_outcome,
            "capture_warnings": list(captures.warnings),
            "last_patch": (
                {k: self.last_patch[k] for k in ("id", "crate", "lib", "timings") if k in self.last_patch}
                if self.last_patch
                else None
            ),
        }

    # ------------------------------------------------------------------ builds

    def pick_crate(self, crates: frozenset[tuple[str, str]]) -> tuple[str, str] | None:
        """The crate to rebuild: the edited library furthest from the program, else the program.

        A library rebuild also rebuilds every crate between it and the program."""
        if not crates:
            return None
        libs = sorted(c for c in crates if c[1] != "bin")
        return libs[0] if libs else sorted(crates)[0]

    async def build(self, request: BuildRequest) -> None:
        build_id = next(self.ids)
        chosen = self.pick_crate(request.crates)
        crate_label = chosen[0] if chosen else "?"
        self.builds += 1
        self.emit(
            {
                "type": "build-started",
                "id": build_id,
                "workspace": self.name,
                "crate": crate_label,
                "files": sorted(request.files),
            }
        )
        bound = log.bind(workspace=self.name, crate=crate_label, build=build_id)
        try:
            # every crate saved in this burst: one patch holds them all
            result = await self.patcher.patch(sorted(rustc_key(*c) for c in request.crates) or None)
        except CompileError as exc:
            self._failed(build_id, crate_label, str(exc), [d.to_dict() for d in exc.diagnostics.diagnostics])
            bound.info("build failed", outcome="compile-error", errors=len(exc.diagnostics.errors))
        except PatchRejected as exc:
            self.last_outcome = "patch-rejected"
            self.emit(
                {
                    "type": "patch-rejected",
                    "id": build_id,
                    "workspace": self.name,
                    "crate": crate_label,
                    "reason": exc.reason,
                    "missing_symbols": exc.missing_symbols,
                    "action": exc.action,
                }
            )
            bound.info("patch rejected", outcome="rejected", missing=len(exc.missing_symbols))
        except LinkError as exc:
            self._failed(build_id, crate_label, str(exc), [])
            bound.info("build failed", outcome="link-error")
        except RebuildError as exc:
            self._failed(build_id, crate_label, str(exc), [])
            bound.info("build failed", outcome=type(exc).__name__)
        except anyio.get_cancelled_exc_class():
            bound.info("build superseded by a newer edit", outcome="cancelled")
            raise
        except Exception as exc:  # a bug or an OS error: report it, keep serving
            bound.exception("build crashed")
            self._failed(build_id, crate_label, f"internal error while building the patch: {exc!r}", [])
        else:
            data = result.to_json()  # once: the jump table's map can hold thousands of entries
            event = {
                "type": "patch-ready",
                "id": build_id,
                "workspace": self.name,
                "crate": data["crate"],
                "edited_crate": data["edited_crate"],
                "lib": data["lib"],
                "jump_table": data["jump_table"],
                "report": data["report"],
                "timings": data["timings"],
            }
            self.last_patch = event
            self.last_outcome = "patch-ready"
            self.emit(event)
            bound.info("patch ready", outcome="patch-ready", lib=result.lib, **event["timings"])

    def _failed(self, build_id: int, crate: str, message: str, diagnostics: list[dict[str, Any]]) -> None:
        self.last_outcome = "build-failed"
        self.emit(
            {
                "type": "build-failed",
                "id": build_id,
                "workspace": self.name,
                "crate": crate,
                "message": message,
                "diagnostics": diagnostics,
            }
        )

    def on_changes(self, paths: set[str]) -> None:
        by_crate, manifests = changed_kinds(paths, self.source_map)
        # A manifest back to the content the session started with (an edit undone, a
        # restored checkout) matches the running program: no full rebuild for it.
        manifests = [m for m in manifests if content_digest(m) != self.manifest_digests.get(m)]
        if manifests:
            self.emit(
                {
                    "type": "full-rebuild-required",
                    "workspace": self.name,
                    "reason": self._manifest_reason(manifests),
                    "files": sorted(manifests),
                }
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
        self.load_source_map()
        self.manifest_digests = {m: content_digest(m) for m in self.source_map.manifests}
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
                edited = sources_edited_since_capture(self.source_map.by_file, self.patcher.captures)
                if edited:
                    log.info("sources changed since the capture", workspace=self.name, files=len(edited))
                    self.on_changes(edited)
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
        self._ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None

    # ------------------------------------------------------------------ server protocol

    def status(self) -> dict[str, Any]:
        return {
            "workspaces": [ws.status() for ws in self.served.values()],
            "problems": [{"workspace": w, "message": m} for w, m in sorted(self.problems.items())],
            "on_busy": self.options.on_busy,
            "debounce_ms": self.options.debounce_ms,
        }

    def _find(self, workspace: str | None) -> ServedWorkspace:
        if workspace is None:
            if len(self.served) == 1:
                return next(iter(self.served.values()))
            raise RequestError(
                "name the workspace: the daemon serves "
                + (", ".join(sorted(self.served)) or "no workspace yet (run `thinpatch capture`)")
            )
        key = os.path.realpath(workspace)
        if key not in self.served:
            raise RequestError(
                f"workspace {workspace} is not served; served: {', '.join(sorted(self.served)) or 'none'}. "
                "Run `thinpatch capture` in it first."
            )
        return self.served[key]

    async def request_rebuild(self, workspace: str | None, crate: str | None) -> None:
        ws = self._find(workspace)
        captures = ws.patcher.captures
        if crate is None:
            tops = captures.top_crates()
            if not tops:
                raise RequestError(f"no program crate is captured in {ws.name}; run `thinpatch capture`.")
            key = (tops[0].crate_name, tops[0].kind)
        else:
            record = captures.rustc.get(crate) or captures.crate(crate)
            if record is None:
                raise RequestError(
                    f"crate {crate!r} is not captured in {ws.name}; captured: {', '.join(sorted(captures.rustc))}"
                )
            key = (record.crate_name, record.kind)
        assert ws.scheduler is not None
        ws.scheduler.submit(BuildRequest(ws.name, frozenset({key}), frozenset(), reason="rebuild"))

    def current_state_for(self, subscription: Subscription) -> list[dict[str, Any]]:
        events = []
        for ws in self.served.values():
            if ws.last_patch and subscription.wants(ws.last_patch):
                events.append(dict(ws.last_patch))
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

    def _start(self, found: CapturedWorkspace) -> ServedWorkspace | None:
        key = os.path.realpath(found.workspace)
        try:
            patcher = Patcher(key, found.capture_root, keep=self.options.keep_patches)
        except RebuildError as exc:
            self.problems[key] = str(exc)
            return None
        self.problems.pop(key, None)
        ws = ServedWorkspace(
            found=CapturedWorkspace(Path(key), found.capture_root),
            patcher=patcher,
            options=self.options,
            publish=self.publish,
            ids=self._ids,
            stamp=capture_stamp(found.capture_root),
        )
        self.served[key] = ws
        assert self._tg is not None
        self._tg.start_soon(self._run_workspace, ws)
        return ws

    def _report_damaged_records(self, ws: ServedWorkspace | None) -> None:
        """A session that starts on records it could not read serves only part of the
        workspace: say so, or edits to the crates they describe would pass in silence."""
        if ws is None or not ws.patcher.captures.warnings:
            return
        warnings = ws.patcher.captures.warnings
        damaged = sorted(
            str(path)
            for path in captures_dir(ws.found.capture_root).glob("*/*/*.json")
            if any(str(path) in w for w in warnings)
        )
        log.warning("capture records skipped", workspace=ws.name, records=len(warnings))
        ws.emit(
            {
                "type": "full-rebuild-required",
                "workspace": ws.name,
                "reason": "some capture records could not be read, so patches for their crates can't be "
                "built:\n  " + "\n  ".join(warnings) + "\nRun `thinpatch capture` and restart the program.",
                "files": damaged,
            }
        )

    async def _run_workspace(self, ws: ServedWorkspace) -> None:
        with anyio.CancelScope() as scope:
            ws._cancel = scope
            try:
                await ws.run()
            except Exception as exc:
                log.exception("workspace stopped", workspace=ws.name)
                self.problems[ws.name] = f"stopped watching: {exc}"
                self.served.pop(ws.name, None)

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

    def discover(self) -> None:
        """Start new workspaces; restart the session of any workspace with a fresh capture."""
        for found in self.candidates():
            key = os.path.realpath(found.workspace)
            ws = self.served.get(key)
            if ws is None:
                self._report_damaged_records(self._start(found))
                continue
            stamp = capture_stamp(found.capture_root)
            if stamp != ws.stamp and stamp:
                log.info("fresh capture: new session", workspace=key)
                self._stop(key)
                started = self._start(found)
                self.publish(
                    {
                        "type": "session-reset",
                        "workspace": key,
                        "reason": "a new `thinpatch capture` rebuilt the program; restart it to apply new patches",
                    }
                )
                self._report_damaged_records(started)

    async def run(self, *, task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self.discover()
            task_status.started(self)
            while True:
                await anyio.sleep(DISCOVERY_INTERVAL_S)
                try:
                    self.discover()
                except Exception:
                    log.exception("workspace discovery failed")
