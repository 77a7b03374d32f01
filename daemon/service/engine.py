"""The daemon's engine: finds captured workspaces, serves each, answers the socket server.

Takes the capture registry (or a fixed list of workspaces) and the server's requests; gives a
``WorkspaceSession`` (``session``) per captured workspace, started when a capture appears,
restarted when a fresh capture replaces it and stopped when it is gone, with the real patcher
and watcher behind it. Discovery's problems, a new session and binaries that are no longer
served become events; so do the patch results processes report.
"""

from __future__ import annotations

import fcntl
import itertools
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.abc
import structlog

from capture.store import Captures, capture_lock_path, captures_dir, list_scopes, load_captures
from daemon.binary.build_id import process_build_id, process_executable
from daemon.binary.symbol_cache import SymbolCache
from daemon.build.errors import MissingCapture, RebuildError
from daemon.build.session_cache import default_session_root, open_session
from daemon.service.patcher import Patcher
from daemon.service.programs import RESTART_HINT, Identity, Program, identify, read_programs
from daemon.service.record_health import DamageReport, RecordsStamp, changed_damage, damage_report, record_files
from daemon.service.session import CountReceivers, EntryPoints, LoadedWorkspace, PatchOutcome, Publish, WorkspaceSession
from daemon.service.watcher import DEFAULT_DEBOUNCE_MS, SourceWatcher
from daemon.service.workspaces import CapturedWorkspace, registered_workspaces
from daemon.socket import protocol
from daemon.socket.protocol import Event, PatchId, RequestError, Subscription

log = structlog.get_logger("thinpatch.engine")

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


def damaged_records(capture_root: Path, warnings: str) -> list[str]:
    """The record files that ``warnings`` (the store's messages) name."""
    return sorted(str(p) for p in captures_dir(capture_root).glob("*/*/*.json") if str(p) in warnings)


def read_workspace(workspace: str, capture_root: Path) -> LoadedWorkspace:
    """Every patchable program under ``capture_root``, the reasons other top crates are not
    programs, and each scope's captures (blocking: reads files).

    Raises MissingCapture when nothing at all is captured there."""
    programs, skipped, by_scope = read_programs(workspace, capture_root)
    if not by_scope:
        # Name the records that could not be read: they are why nothing is captured.
        warnings = [w for scope in list_scopes(capture_root) for w in load_captures(capture_root, scope).warnings]
        raise MissingCapture(
            f"no captures in {capture_root}. Run `thinpatch capture` in {workspace} first."
            + "".join(f"\n  {w}" for w in warnings)
        )
    return LoadedWorkspace(programs, [s.reason for s in skipped], by_scope)


class Scanned(NamedTuple):
    found: CapturedWorkspace
    key: str  # the workspace's real path
    stamp: tuple[int, ...]
    # for a session about to (re)start: the session, or why it can't be served; else None
    prepared: WorkspaceSession | RebuildError | None


@dataclass
class EngineOptions:
    debounce_ms: int = DEFAULT_DEBOUNCE_MS
    on_busy: str = "restart"
    keep_patches: int = 16
    force_polling: bool | None = None
    warm_up: bool = True  # compile each program once when its session starts


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
        self.served: dict[str, WorkspaceSession] = {}
        self.problems: dict[str, str] = {}
        self.retired: dict[str, Program] = {}  # build ID -> program of an earlier session
        self.count_receivers: CountReceivers = lambda build_id: 0
        self.entry_points: EntryPoints = lambda build_id: []  # the server's, once serving
        self.symbol_cache = SymbolCache()
        self._ids = itertools.count(1)
        self._tg: anyio.abc.TaskGroup | None = None
        self._stopped_at_stamp: dict[str, tuple[int, ...]] = {}
        self._wake: anyio.Event | None = None  # set: discover now instead of at the next interval
        self._discovering: anyio.Lock | None = None  # held by the discovery round under way
        self._rounds_started = 0
        self._damage: dict[str, Event] = {}  # workspace -> the event about its damaged records
        self._record_stamps: dict[str, RecordsStamp] = {}

    # ------------------------------------------------------------------ server protocol

    def status(self) -> dict[str, Any]:
        # Someone may wait on a new capture (`run` after its build polls here): look at once.
        if self._wake is not None:
            self._wake.set()
        return {
            "workspaces": [ws.status() for ws in self.served.values()],
            "problems": [{"workspace": w, "message": m} for w, m in sorted(self.problems.items())],
            "on_busy": self.options.on_busy,
            "debounce_ms": self.options.debounce_ms,
        }

    def _find(self, workspace: str | None, real: str | None = None) -> WorkspaceSession:
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
        ws.rebuild(keys)

    def programs(self) -> list[Program]:
        return [sp.program for ws in self.served.values() for sp in ws.programs.values()]

    async def identify(self, subscription: Subscription) -> tuple[Subscription, list[Event]]:
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
        if who.reason in ("replaced", "not-captured"):
            # Perhaps captured a moment ago (`run` starts a program as soon as its build ends):
            # look before saying it gets no patches.
            await self.look_now()
            who = identify(
                pid=pid, build_id=build_id, executable=executable, programs=self.programs(), retired=self.retired
            )
        # An unidentified process still gets a build ID no patch carries: it must receive none.
        matched = replace(subscription, build_id=who.build_id or f"unidentified-{pid}")
        if who.program is not None:
            return matched, []
        assert who.reason is not None and who.message is not None  # identify() says why there is no program
        event = protocol.not_patchable(reason=who.reason, message=who.message, for_pid=pid)
        self.publish(dict(event))  # observers (`thinpatch watch`) see it too; the subscriber isn't one yet
        return matched, [event]

    def record_patch_result(self, subscription: Subscription | None, fields: dict[str, Any]) -> None:
        """A process reports whether it applied a patch; observers hear about it."""
        pid = fields.get("pid") or (subscription.pid if subscription else None)
        if pid is None:
            raise RequestError("say which process this result is from: send `pid`, or subscribe with it first")
        patch_id: PatchId = fields["id"]
        outcome = PatchOutcome(applied=fields["applied"], message=fields.get("message"))
        for ws in self.served.values():
            for served in ws.programs.values():
                if served.is_current(patch_id):
                    served.record_result(patch_id, pid, outcome)
                    log.info(
                        "patch applied" if outcome.applied else "patch failed in the program",
                        workspace=ws.name, program=served.program.label, patch=patch_id, pid=pid,
                        message=outcome.message,
                    )
                    ws.emit(
                        protocol.patch_result(
                            patch_id=patch_id,
                            workspace=ws.name,
                            pid=pid,
                            applied=outcome.applied,
                            message=outcome.message,
                            program=served.program.describe(),
                        )
                    )
                    return
        raise RequestError(f"no patch with id {patch_id!r} is current; results are taken for the latest patches only")

    def current_state_for(self, subscription: Subscription) -> list[Event]:
        events = []
        for ws in self.served.values():
            for served in ws.programs.values():
                if served.last_patch and subscription.wants(served.last_patch):
                    events.append(dict(served.last_patch))
        events += [dict(event) for event in self._damage.values() if subscription.wants(event)]
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

    def prepare(self, key: str, capture_root: Path) -> WorkspaceSession | RebuildError:
        """A session for the workspace, its programs' patchers ready (reads files and opens
        session caches: a worker thread's job), or why it can't be served."""
        try:
            loaded = read_workspace(key, capture_root)
            return WorkspaceSession(
                CapturedWorkspace(Path(key), capture_root),
                loaded,
                make_patcher=self.open_patcher,
                make_watcher=partial(
                    SourceWatcher, debounce_ms=self.options.debounce_ms, force_polling=self.options.force_polling
                ),
                publish=lambda event: self.publish(event),
                ids=self._ids,
                count_receivers=lambda build_id: self.count_receivers(build_id),
                entry_points=lambda build_id: self.entry_points(build_id),
                on_busy=self.options.on_busy,
                warm_up=self.options.warm_up,
            )
        except RebuildError as exc:
            return exc

    def open_patcher(self, program: Program, captures: Captures) -> Patcher:
        """A program's patcher, over its scope's session cache (created if need be)."""
        session = open_session(default_session_root(captures.capture_root, captures.scope))
        return Patcher(
            program.workspace,
            captures,
            session,
            top=program.crate,
            keep=self.options.keep_patches,
            symbol_cache=self.symbol_cache,
        )

    def _start(
        self, found: CapturedWorkspace, prepared: WorkspaceSession | RebuildError | None = None
    ) -> WorkspaceSession | None:
        key = os.path.realpath(found.workspace)
        ws = self.prepare(key, found.capture_root) if prepared is None else prepared
        if isinstance(ws, RebuildError):
            exc = ws
            if self.problems.get(key) != str(exc):  # once per problem, not once per discovery round
                self.publish(
                    protocol.full_rebuild_required(
                        workspace=key, reason=f"{exc}", files=damaged_records(found.capture_root, str(exc))
                    )
                )
            self.problems[key] = str(exc)
            return None
        self.problems.pop(key, None)
        ws.stamp = capture_stamp(found.capture_root)
        self.served[key] = ws
        assert self._tg is not None
        self._tg.start_soon(self._run_workspace, ws)
        return ws

    def _report_damaged_records(self, ws: WorkspaceSession | None) -> None:
        """A session that starts on records it could not read serves only part of the
        workspace: say so, or edits to the crates they describe would pass in silence."""
        if ws is not None:
            warnings = [w for c in ws.captures for w in c.warnings]
            self._note_damage(ws.name, damage_report(ws.name, warnings, record_files(ws.found.capture_root)))

    def _note_damage(self, key: str, report: DamageReport | None) -> None:
        """Damaged records become one event (replayed to new subscribers) and a `problems`
        entry, once per damage; repaired ones clear both."""
        known = self._damage.get(key)
        if report is None:
            if known is not None:
                del self._damage[key]
                if self.problems.get(key) == known["reason"]:
                    del self.problems[key]
            return
        self.problems[key] = report.message
        if known is not None and known["reason"] == report.message:
            return
        log.warning("capture records skipped", workspace=key, records=len(report.files))
        event = protocol.full_rebuild_required(workspace=key, reason=report.message, files=report.files)
        self._damage[key] = event
        self.publish(event)

    async def check_records(self) -> None:
        """Look for record files rewritten since the last look (a stat each), and read
        those workspaces' records again (in a worker thread)."""
        served: dict[str, tuple[Path, RecordsStamp | None]] = {
            key: (ws.found.capture_root, self._record_stamps.get(key)) for key, ws in self.served.items()
        }
        sessions = {key: ws.stamp for key, ws in self.served.items()}

        def look() -> dict[str, tuple[RecordsStamp, DamageReport | None]]:
            changed = changed_damage(served)
            # A fresh capture starts a new session at the next discovery, which reports its own damage.
            return {key: found for key, found in changed.items() if capture_stamp(served[key][0]) == sessions[key]}

        for key, (stamp, report) in (await anyio.to_thread.run_sync(look)).items():
            if key in self.served and self.served[key].stamp == sessions[key]:
                self._record_stamps[key] = stamp
                self._note_damage(key, report)

    async def _run_workspace(self, ws: WorkspaceSession) -> None:
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
            ws.stop()

    def stop_watchers(self) -> None:
        for ws in self.served.values():
            ws.stop_watching()

    def scan(
        self, served: dict[str, tuple[int, ...]] | None = None, stopped: dict[str, tuple[int, ...]] | None = None
    ) -> list[Scanned]:
        """The filesystem half of discovery (run in a worker thread): candidates, their real
        paths and capture stamps, and for each session about to (re)start, the session.
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
                self._damage.pop(key, None)  # the new session announces its own, after session-reset
                started = self._start(found, prepared)
                self._retire(ws, started)
                self.publish(
                    protocol.session_reset(
                        workspace=key,
                        reason="a new `thinpatch capture` rebuilt the program; restart it to apply new patches",
                    )
                )
                self._report_damaged_records(started)

    def _retire(self, old: WorkspaceSession, new: WorkspaceSession | None) -> None:
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

    async def look_now(self) -> None:
        """A discovery round that starts after this call (none before the engine runs). Rounds
        run one at a time (two would both restart a fresh session); callers waiting together
        share one."""
        if self._discovering is None:
            return
        asked = self._rounds_started
        async with self._discovering:
            if self._rounds_started > asked:
                return  # one began after the call, and has run
            self._rounds_started += 1
            try:
                self.discover(await self.scan_in_thread())
            except Exception as exc:
                log.error("workspace discovery failed", error=repr(exc))

    async def run(self, *, task_status: anyio.abc.TaskStatus[Engine] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._wake = anyio.Event()
            self._discovering = anyio.Lock()
            async with self._discovering:
                self.discover(await self.scan_in_thread())
            task_status.started(self)
            while True:
                with anyio.move_on_after(DISCOVERY_INTERVAL_S):
                    await self._wake.wait()
                self._wake = anyio.Event()  # requests from now on wake the next look
                await self.look_now()
                try:
                    await self.check_records()
                except Exception as exc:
                    log.error("checking the capture records failed", error=repr(exc))
