"""`thinpatch run`: capture if needed, serve, run the program, and patch it on every save.

One command does what a developer would otherwise do in three terminals: it captures the
program when there is no capture or the capture is stale (a source or manifest it was built
from was saved since), uses the running daemon or starts one for the session, launches the
captured binary with the socket in its environment, and prints thinpatch's own status lines
beside the program's output. A `Cargo.toml` or `build.rs` change re-captures and, once that
build succeeds, restarts the program (a failed build leaves the old one running); a program
that exits is started again on the next save that builds, re-captured first when its sources
changed since its build; Ctrl-C stops everything this command started.

The decisions (staleness, which lines to print) are pure functions at the top; the
processes and the socket are below them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from capture.store import Captures
from daemon.build.diagnostics import is_summary_dict
from daemon.build.processes import dies_with_parent
from daemon.cli.change_lines import changed_names, named_list, short_name, uncertain
from daemon.cli.daemon_patch import serves
from daemon.cli.early_build import EarlyBuild
from daemon.cli.run_binary import binary_refusal
from daemon.cli.run_sources import build_inputs, changed_since_build, file_mtimes
from daemon.cli.terminal import Style, wants_color
from daemon.service.programs import Program, ProgramChoiceError, choose_program, read_programs
from daemon.service.watcher import content_digest
from daemon.service.workspaces import NoCapture, find_captured_workspace
from daemon.socket.listen_address import ListenAddress, dial_url, exposure_warning

if TYPE_CHECKING:
    from daemon.cli.capture_run import BuildHold, WorkspaceInfo

PREFIX = "[thinpatch]"
STOP_GRACE_S = 3.0


# --------------------------------------------------------------------------- pure


@dataclass(frozen=True)
class Selection:
    """Which program to build and run, from cargo's selection flags (as `cargo run` takes them)."""

    bin: str | None = None
    release: bool = False
    profile: str | None = None
    target: str | None = None
    cargo_args: tuple[str, ...] = ()  # for `cargo build`, besides --release and --target


def manifest_files(captures: Captures | None, workspace: Path) -> set[str]:
    """Files whose change needs cargo: every captured crate's Cargo.toml and build.rs, and
    the workspace's Cargo.toml and Cargo.lock (only those without a capture)."""
    files = {str(workspace / "Cargo.toml"), str(workspace / "Cargo.lock")}
    for record in captures.rustc.values() if captures is not None else ():
        if record.manifest_dir:
            files.add(os.path.join(record.manifest_dir, "Cargo.toml"))
            files.add(os.path.join(record.manifest_dir, "build.rs"))
    return files


def stale_reason(
    program: Program | None, read_at: Mapping[str, float], mtimes: Mapping[str, float], workspace: str
) -> str | None:
    """Why the capture can't serve this run (None: it can): there is none, or a file the
    program was built from (a source or a manifest; ``read_at``: when the build read it) was
    saved since, so its binary is not the current sources' build."""
    if program is None:
        return "no capture of this program yet"
    changed = changed_since_build(read_at, mtimes)
    if changed:
        return f"{name_files(changed, workspace)} changed since the capture"
    return None


def name_files(paths: Iterable[str], workspace: str, most: int = 3) -> str:
    """``src/main.rs, src/world.rs and 2 more``: paths relative to the workspace when in it."""
    inside = os.path.join(workspace, "")
    names = sorted(os.path.relpath(p, workspace) if p.startswith(inside) else p for p in paths)
    if len(names) > most:
        return f"{', '.join(names[:most])} and {len(names) - most} more"
    return ", ".join(names)


def relaunch_reason(running: Program, captured: Program | None, binary_exists: bool, stale: str | None) -> str | None:
    """Why a program that stopped must be built again before it starts (None: its binary is
    the current sources' build, so it starts as it is). ``captured`` is the program the
    capture on disk holds now, ``stale`` its :func:`stale_reason`."""
    if not binary_exists:  # a failed link removes it, and the capture can't name its build ID
        return "its binary is gone"
    if captured is None or captured.build_id != running.build_id:
        return "the capture changed since it started"
    return stale


def build_digests(before: dict[str, str | None], after: dict[str, str | None]) -> dict[str, str | None]:
    """The manifest contents a capture build answered: each file as the build found it, except
    Cargo.lock as the build left it (cargo rewrites it itself)."""
    return {
        f: after.get(f) if os.path.basename(f) == "Cargo.lock" else before.get(f)
        for f in before.keys() | after.keys()
    }


def already_built(files: Iterable[str], built: dict[str, str | None], current: dict[str, str | None]) -> bool:
    """A full-rebuild-required asks for nothing new when every file it names still has the
    content our own last capture build answered (as Cargo.lock, rewritten by that build)."""
    files = list(files)
    return bool(files) and all(f in built and current.get(f) == built[f] for f in files)


def first_error_at(errors: list[dict[str, Any]], workspace: str) -> str | None:
    """file:line of the first error's primary span, relative to the workspace when in it
    (None when it has no span)."""
    for error in errors[:1]:
        spans = error.get("spans") or []
        span = next((s for s in spans if s.get("is_primary")), spans[0] if spans else None)
        if span and span.get("file_name"):
            path = str(span["file_name"])
            if os.path.isabs(path) and path.startswith(os.path.join(workspace, "")):
                path = os.path.relpath(path, workspace)
            return f"{path}:{span.get('line_start')}"
    return None


@dataclass
class RunView:
    """Turns daemon events into the status lines `thinpatch run` prints (pure)."""

    program: Program
    style: Style
    pid: int | None = None
    built_ms: dict[Any, float] = field(default_factory=dict)
    warnings: dict[Any, int] = field(default_factory=dict)  # compiler warnings, by patch id
    patches: dict[Any, dict[str, Any]] = field(default_factory=dict)  # patch-ready events, by id (newest few)
    failing: str | None = None  # the last failed patch build's summary, until one succeeds
    restart_failing: str | None = None  # the failed restart build's, until a restart (a new view)
    code_broken: bool = False  # this program's last build failed with compile errors

    def fail(self, summary: str) -> None:
        """The restart build failed: its summary stays last until a restart build succeeds."""
        self.restart_failing = summary

    def lines(self, event: dict[str, Any]) -> list[str]:
        """The lines for this event; after a failed build, its summary stays the last line."""
        out = self._lines(event)
        kind = event.get("type")
        if kind == "patch-ready" and self.mine(event) and not event.get("replayed"):
            self.failing = None
        elif kind == "build-failed" and out:
            self.failing = out[-1]
            out = out[:-1]
        if out:
            out += [line for line in (self.failing, self.restart_failing) if line]
        return out

    def save_built(self, event: dict[str, Any]) -> bool:
        """This event ends the build of a save for this program, and the sources may build:
        a patch was built, or refused (a change a patch can't carry), or the build failed on
        something other than compile errors (a fresh build may cure it). A program that
        stopped starts again on such an event (call after :meth:`lines`)."""
        if event.get("replayed") or not self.mine(event):
            return False
        kind = event.get("type")
        built = ("patch-ready", "patch-rejected", "restart-required")
        return kind in built or (kind == "build-failed" and not self.code_broken)

    def mine(self, event: dict[str, Any]) -> bool:
        program = event.get("program") or {}
        if program:
            return program.get("build_id") == self.program.build_id
        return event.get("type") in ("full-rebuild-required", "error")

    def _lines(self, event: dict[str, Any]) -> list[str]:
        kind = event.get("type")
        tag = self.style.code(PREFIX)
        if event.get("replayed"):
            return []
        if kind == "build-started" and self.mine(event):
            files = ", ".join(os.path.basename(f) for f in event.get("files") or []) or "requested"
            return [f"{tag} building {event.get('crate')} ({files})"]
        if kind == "patch-ready" and self.mine(event):
            self.code_broken = False
            total = (event.get("timings") or {}).get("total_ms", 0.0)
            self.built_ms[event.get("id")] = total
            report = event.get("report") or {}
            warned = [w for w in report.get("compiler_warnings") or [] if not is_summary_dict(w)]
            self.warnings[event.get("id")] = len(warned)
            self.patches[event.get("id")] = event
            while len(self.patches) > 8:
                self.patches.pop(next(iter(self.patches)))
            if event.get("subscribers") == 0 and self.pid is not None:
                return [
                    f"{tag} patch built in {total:.0f} ms{_warned(len(warned))}, but {self.program.name} is not "
                    "listening: add "
                    "thinpatch-client to it (`thinpatch init`) and call `thinpatch_client::connect()`"
                ]
            return []  # the process's own report says whether it applied
        if kind == "patch-result" and event.get("pid") == self.pid:
            total = self.built_ms.get(event.get("id"))
            took = f" in {total:.0f} ms" if total is not None else ""
            took += _warned(self.warnings.get(event.get("id"), 0))
            if event.get("applied"):
                ready = self.patches.get(event.get("id")) or {}
                return [f"{tag} {applied_line(ready, self.program.name, self.pid, took, self.style)}"]
            return [f"{tag} {self.style.bad('patch failed')} in {self.program.name}: {event.get('message')}"]
        if kind == "build-failed" and self.mine(event):
            diagnostics = event.get("diagnostics") or []
            errors = [d for d in diagnostics if d.get("level") == "error" and not is_summary_dict(d)]
            self.code_broken = bool(errors)  # not for a failure that isn't the code's (a fresh build may cure it)
            warnings = [d for d in diagnostics if d.get("level") == "warning" and not is_summary_dict(d)]
            out = [(d.get("rendered") or d.get("message") or "").rstrip("\n") for d in errors]
            if not errors:
                out.append(str(event.get("message")))
            count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
            where = first_error_at(errors, self.program.workspace)
            if where:
                count += f" at {where}" if len(errors) == 1 else f", the first at {where}"
            if warnings:
                count += f", {_plural(len(warnings), 'warning')}"
            if self.pid is None:  # it stopped: a save that builds starts it again
                keeps = f"{self.program.name} starts again once a save builds"
            else:
                keeps = f"{self.program.name} keeps running the last good code"
            out.append(f"{tag} {self.style.bad('build failed')} ({count}); {keeps}")
            return out
        if kind == "restart-required" and self.mine(event):
            self.code_broken = False
            return [f"{tag} {self.style.warn('needs a restart')}: {restart_line(event)}"]
        if kind == "patch-rejected" and self.mine(event):
            refused = f"{event.get('reason')}. {event.get('action') or ''}".rstrip()
            return [f"{tag} {self.style.bad('patch refused')}: {refused}"]
        if kind == "not-patchable" and self.pid is not None and event.get("for_pid") == self.pid:
            return [f"{tag} {self.style.warn('not patchable')}: {event.get('message')}"]
        return []


def applied_line(ready: dict[str, Any], name: str, pid: int | None, took: str, style: Style) -> str:
    """What a process applying a patch means, by the patch's verdict: the new code runs
    (``carried``), or it may not everywhere (``unknown``: says which and why)."""
    names = changed_names(ready)
    what = f"{style.ok('patched')} {names}" if names else style.ok("patched")
    if ready.get("verdict") == "unknown":
        doubtful = uncertain(ready)
        which = named_list(short_name(str(c.get("function"))) for c in doubtful) or "the patch"
        why = ready.get("verdict_reason") or (doubtful[0].get("why") if doubtful else "") or "it can't be told"
        return (f"{what}{took}, applied by {name} (pid {pid}), but {which} may still run old code ({why}); "
                "`thinpatch restart` runs it for sure")
    if not names and ready.get("verdict") == "carried":
        return f"{what}{took}: no function's code changed; {name} (pid {pid}) runs the saved code"
    return f"{what}{took}: {name} (pid {pid}) runs the new code"


def restart_line(event: dict[str, Any]) -> str:
    """Why a save's code can only run after a restart, and where (the change it is about)."""
    changes = event.get("changes") or []
    about = next((c for c in changes if c.get("decisive")), None)
    if about is None or not about.get("file"):
        return str(event.get("reason"))
    return f"{event.get('reason')} (in {short_name(str(about.get('function')))}, {about['file']}:{about.get('line')})"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _warned(count: int) -> str:
    """`` (2 warnings)`` after a build's time, or nothing."""
    return f" ({_plural(count, 'warning')})" if count else ""


def describe_exit(name: str, returncode: int) -> str:
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode}"
    return f"{name} {how}; it starts again on the next save that builds, from the current sources"


# --------------------------------------------------------------------------- effects


class RunError(Exception):
    """Something `thinpatch run` can't get past; the message says what to do."""


class BuildFailed(RunError):
    """cargo's build under capture failed (its output is already on the terminal)."""


@dataclass
class RunOptions:
    workspace: Path
    selection: Selection
    program_args: list[str]
    socket_path: Path
    restart_on_rebuild: bool = True
    early_builds: str = "auto"  # start a save's capture build beside its patch build: see holds_early_build
    colour: str = "auto"
    listen: ListenAddress | None = None  # also serve programs on other hosts, over a WebSocket


def say(line: str) -> None:
    # One write: print() writes the newline apart, and the program's output, on the same
    # terminal, can land between the two.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def tagged(style: Style, text: str) -> str:
    return f"{style.code(PREFIX)} {text}"


def find_program(workspace: Path, selection: Selection) -> tuple[Program | None, Captures | None]:
    """The captured program this selection runs and its scope's captures; (None, None) when
    there is no capture of it (found as every command finds one: the registry, then the
    workspace's own target directory, under the ownership rule)."""
    from daemon.cli.capture_run import profile_dir_name

    try:
        found = find_captured_workspace(workspace)
    except NoCapture:
        return None, None
    programs, _, by_scope = read_programs(str(found.workspace), found.capture_root)
    profile = profile_dir_name(selection.release, ["--profile", selection.profile] if selection.profile else [])
    try:
        program = choose_program(programs, bin_name=selection.bin, profile=profile, target=selection.target)
    except ProgramChoiceError as exc:
        if programs and "several captured programs" in str(exc):
            raise RunError(str(exc)) from None
        return None, None
    return program, by_scope.get(program.scope)


async def capture(
    workspace: Path,
    selection: Selection,
    known: dict[Path, WorkspaceInfo] | None = None,
    hold: BuildHold | None = None,
) -> None:
    """Build under capture. ``known``: the workspace as this run's last build found it, by
    directory (cargo starts at once while that is checked; updated here). ``hold``: an early
    build's (see daemon.cli.early_build)."""
    from daemon.cli.capture_run import CaptureError, capture_workspace

    try:
        result = await capture_workspace(
            workspace, selection.release, selection.target, list(selection.cargo_args),
            known=known.get(workspace) if known is not None else None, hold=hold,
        )
    except CaptureError as exc:
        raise BuildFailed(f"{exc}\nFix that, then run `thinpatch run` again.") from None
    except OSError as exc:  # a full disk, a vanished directory: the build could not finish
        raise BuildFailed(f"the build could not finish: {exc}") from None
    if known is not None and result.info is not None:
        known[workspace] = result.info
    if result.recorded_nothing:  # cargo built, but the capture could not be kept: say why
        raise BuildFailed("cargo built the program, but thinpatch could not record the build:"
                          + "".join(f"\n  {w}" for w in result.warnings))
    if not result.ok:
        raise BuildFailed("the build failed (see cargo's output above); fix it and run `thinpatch run` again")


async def remember_workspace(workspace: Path, inspected: dict[Path, WorkspaceInfo]) -> None:
    """The workspace as cargo describes it now, for a first restart build that did not follow
    a build of this run (it checks it again beside cargo); nothing when cargo can't say (that
    build asks again and reports it)."""
    from daemon.cli.capture_run import CaptureError, inspect_workspace

    try:
        info = await inspect_workspace(workspace.resolve(), dict(os.environ))
    except (CaptureError, OSError, ValueError):
        return
    inspected.setdefault(workspace, info)  # a build's own answer, if one came meanwhile, is newer


def manifest_digests(files: Iterable[str]) -> dict[str, str | None]:
    return {f: content_digest(f) for f in files}


def current_manifest_files(options: RunOptions) -> set[str]:
    """:func:`manifest_files` of the program's capture as it is on disk now."""
    _, captures = find_program(options.workspace, options.selection)
    return manifest_files(captures, options.workspace)


# A save's patch build ended without asking for a restart: its early build is called off.
NO_RESTART_OUTCOMES = frozenset({"patch-ready", "patch-rejected", "build-failed"})


# From this many CPUs a held cargo's start (its launcher-started shims waiting at the gate)
# costs a carried save a few percent and spares a restart the patch attempt (bench_early_build);
# on one CPU it would take every millisecond it runs from the patch build.
EARLY_BUILD_CPUS = 2


def holds_early_build(
    options: RunOptions, running: bool, early: EarlyBuild | None, after_restart: bool, cpus: int
) -> bool:
    """A save's patch build started: start its capture build now, held until the verdict,
    when a verdict of "restart" would restart the program (it runs, and restarts are on), no
    earlier save's build still waits for its own, and the mode says so: ``always``;
    ``auto``, with two or more ``cpus``, or on one after a save that needed a restart (edits to
    `main` or a layout come in runs)."""
    if not (options.restart_on_rebuild and running and (early is None or early.decided)):
        return False
    if options.early_builds == "auto":
        return cpus >= EARLY_BUILD_CPUS or after_restart
    return options.early_builds == "always"


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


async def fresh_program(
    options: RunOptions,
    style: Style,
    *,
    force: bool = False,
    why: str | None = None,
    digests: dict[str, str | None] | None = None,
    inspected: dict[Path, WorkspaceInfo] | None = None,
    early: EarlyBuild | None = None,
) -> Program:
    """The program to run, captured first when there is no capture or it is stale (or always,
    with `force`, saying `why`). `digests` gets the manifest contents that program was built
    from (see :func:`build_digests`); `inspected`, the workspace as the build found it.
    `early`: that build, started already and held (with `force`)."""
    program, captures = find_program(options.workspace, options.selection)
    files = manifest_files(captures, options.workspace)
    before = early.before if early is not None else manifest_digests(files)
    if program is not None and captures is not None and not force:
        reason = capture_staleness(options.workspace, program, captures, files)
    else:
        reason = (why or "a rebuild was requested") if force else stale_reason(None, {}, {}, "")
    if reason is None and program is not None:
        if digests is not None:
            digests.clear()
            digests.update(before)
        return program
    say(tagged(style, f"building {options.workspace.name} under capture ({reason})"))
    if early is None:
        await capture(options.workspace, options.selection, inspected)
    else:
        await early.go()
    program, captures = find_program(options.workspace, options.selection)
    if program is None:
        raise BuildFailed(
            "the build finished but captured no program to run. Is there a bin crate? Choose one with --bin "
            "or -p, as with `cargo run`."
        )
    if digests is not None:
        after = manifest_digests(manifest_files(captures, options.workspace))
        digests.clear()
        digests.update(build_digests(before, after))
    return program


def capture_staleness(workspace: Path, program: Program, captures: Captures, manifests: Iterable[str]) -> str | None:
    """:func:`stale_reason` of ``program`` as its capture and the disk are now."""
    read_at = build_inputs(captures, program, manifests)
    return stale_reason(program, read_at, file_mtimes(read_at), str(workspace))


def why_rebuild_to_relaunch(options: RunOptions, running: Program) -> str | None:
    """Why ``running``, which stopped, must be built again before it starts (None: its binary
    is the current sources' build): see :func:`relaunch_reason`."""
    try:
        captured, captures = find_program(options.workspace, options.selection)
    except RunError:  # several programs match now: the build says which is meant
        captured, captures = None, None
    stale = None
    if captured is not None and captures is not None:
        stale = capture_staleness(options.workspace, captured, captures, manifest_files(captures, options.workspace))
    return relaunch_reason(running, captured, os.path.exists(running.binary), stale)


def restart_failure(exc: RunError) -> tuple[str | None, str]:
    """What to show of a failed restart build (None: cargo's output already is on the
    terminal) and the short reason for the one line that says the old program keeps running."""
    message = str(exc).rstrip()
    if isinstance(exc, BuildFailed) and message.startswith("the build failed"):
        return None, "the build failed; cargo's output is above"
    if "\n" in message:
        return message, "see above"
    return None, message.rstrip(".")


def daemon_running(socket_path: Path) -> bool:
    from daemon.socket.single_instance import probe

    return probe(socket_path).state == "running"


def start_daemon(socket_path: Path, log_path: Path, listen: ListenAddress | None = None) -> subprocess.Popen:
    """A `thinpatch serve` for this session, in its own process group (Ctrl-C reaches us, and
    we stop it once the program is stopped)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "daemon", "serve", "--socket", str(socket_path)]
    if listen is not None:
        argv += ["--listen", str(listen)]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            # SIGTERM (a clean stop) if `run` itself is killed: no daemon is left behind
            dies_with_parent(argv, os.environ, "TERM"),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while not daemon_running(socket_path):
        if process.poll() is not None:
            said = last_line(log_path)
            raise RunError(f"the thinpatch daemon could not start: {said}" if said else
                           f"the thinpatch daemon could not start; see {log_path}")
        if time.monotonic() > deadline:
            process.kill()
            raise RunError(f"the thinpatch daemon did not start listening within 20 s; see {log_path}")
        time.sleep(0.05)
    return process


def last_line(path: Path) -> str | None:
    """The last line a log ends with (a daemon that could not start says why there)."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1].removeprefix("thinpatch serve: ") if lines else None


def stop_process(process: subprocess.Popen | None, *, group: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
        process.wait(timeout=STOP_GRACE_S)
    except (subprocess.TimeoutExpired, ProcessLookupError, PermissionError):
        try:
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()


class ProgramRunner:
    """The program as a child process: stdin, stdout and stderr are the terminal's."""

    def __init__(self, options: RunOptions, style: Style) -> None:
        self.options = options
        self.style = style
        self.process: subprocess.Popen | None = None
        self.exited = anyio.Event()
        # THINPATCH_ADDR and THINPATCH_TOKEN under --listen: the program takes patches as bytes
        self.remote_env: dict[str, str] = {}

    def start(self, program: Program) -> int:
        refusal = binary_refusal(program.binary, program.workspace)  # as late as can be before exec
        if refusal is not None:
            raise RunError(refusal)  # before the running program is stopped: it keeps running
        self.stop()  # one program at a time, whichever path restarts it
        env = dict(os.environ)
        env["THINPATCH_SOCKET"] = str(self.options.socket_path)
        env.update(self.remote_env)
        if program.build_id:
            env["THINPATCH_BUILD_ID"] = program.build_id
        # SIGTERM if `run` itself is killed, as when it stops the program on purpose
        argv = dies_with_parent([program.binary, *self.options.program_args], env, "TERM")
        self.process = subprocess.Popen(argv, env=env)
        self.exited = anyio.Event()
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        process, self.process = self.process, None  # stopped on purpose: no "exited" line
        stop_process(process)

    async def watch_exit(self, name: str) -> None:
        """Report when the program ends on its own (not when we stopped it)."""
        process = self.process
        assert process is not None
        returncode = await anyio.to_thread.run_sync(process.wait, abandon_on_cancel=True)
        if process is self.process:
            say(tagged(self.style, describe_exit(name, returncode)))
            self.exited.set()


async def remote_environment(client: Any, options: RunOptions) -> dict[str, str]:
    """What the program needs to take patches over the daemon's WebSocket endpoint. Raises
    RunError when the running daemon has none."""
    from daemon.socket.remote_token import TokenError, load_or_create_token

    status = await client.request({"type": "status"})
    url = status.get("daemon", {}).get("listen")
    if not url:
        raise RunError(
            f"the running thinpatch daemon (pid {client.hello.get('pid')}) does not listen for programs on other "
            f"hosts: stop it with `thinpatch stop` and run `thinpatch run --listen {options.listen}` again, or "
            f"start it with `thinpatch serve --listen {options.listen}`"
        )
    try:
        token = await anyio.to_thread.run_sync(load_or_create_token, options.socket_path)
    except TokenError as exc:
        raise RunError(str(exc)) from None
    return {"THINPATCH_ADDR": dial_url(url), "THINPATCH_TOKEN": token}


async def wait_until_served(client: Any, program: Program, timeout: float = 20.0) -> None:
    """A daemon started without --workspace looks for new captures when asked for its status."""
    with anyio.move_on_after(timeout):
        workspace = os.path.realpath(program.workspace)  # the daemon keys workspaces by real path
        while not serves(await client.request({"type": "status"}), workspace, program.build_id):
            await anyio.sleep(0.05)
        return
    raise RunError(
        f"the running daemon does not serve {program.workspace}. If it was started with --workspace, "
        "stop it (`thinpatch stop`) and run `thinpatch run` again."
    )


async def run_session(options: RunOptions) -> int:
    """The session, while this `run` holds the project's run lock (one `run` per project)
    and takes SIGUSR1 (`thinpatch restart`) as a request for a fresh build and restart."""
    from daemon.cli import run_lock
    from daemon.cli.subprocess_teardown import drop_subprocess_teardown_race

    drop_subprocess_teardown_race()  # (outside asyncio: nothing to drop)
    capture_root = await anyio.to_thread.run_sync(run_lock.capture_root_of, options.workspace)
    # Until the receiver below is in place, a request is dropped rather than fatal (the
    # default action); the program and the daemon start later, with the receiver's handler,
    # which does not outlive exec.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        lock = run_lock.hold(capture_root)
    except run_lock.RunActive as exc:
        raise RunError(run_lock.refusal(exc.pid)) from None
    except run_lock.RunLockError as exc:
        raise RunError(f"{exc} (it keeps to one `thinpatch run` per project)") from None
    try:
        with anyio.open_signal_receiver(signal.SIGUSR1) as restart_requests:
            return await _session(options, restart_requests)
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the lock names this pid until it is closed
        os.close(lock)


async def _session(options: RunOptions, restart_requests: AsyncIterator[Any]) -> int:
    from daemon.socket.client import DaemonUnavailable, connect

    style = Style(wants_color(options.colour, sys.stderr))
    built: dict[str, str | None] = {}  # the manifest contents the running program was built from
    inspected: dict[Path, WorkspaceInfo] = {}  # the workspace as the last build found it
    program = await fresh_program(options, style, digests=built, inspected=inspected)
    refusal = binary_refusal(program.binary, program.workspace)  # before the daemon starts for it
    if refusal is not None:
        raise RunError(refusal)
    started_daemon = None
    if not daemon_running(options.socket_path):
        log_path = find_captured_workspace(options.workspace).capture_root / "run-daemon.log"
        # From this thread, which lives as long as `run`: the daemon's parent-death signal is
        # tied to the thread that started it.
        started_daemon = start_daemon(options.socket_path, log_path, options.listen)
        say(tagged(style, f"started the thinpatch daemon for this session (log: {log_path})"))
    if options.listen is not None and (warning := exposure_warning(options.listen)) is not None:
        say(tagged(style, f"{style.warn('warning')}: {warning}"))
    runner = ProgramRunner(options, style)
    interrupted = False
    view: RunView  # once the program runs

    early: EarlyBuild | None = None  # the capture build of the save being built, held until its verdict
    after_restart = False  # the last save's verdict for this program was a restart
    cpus = usable_cpus()

    def start_early(tg: anyio.abc.TaskGroup) -> None:
        """Start the capture build of the save whose patch build just started: cargo gets past
        its own start while the daemon decides (see daemon.cli.early_build)."""
        nonlocal early
        early = EarlyBuild(manifest_digests(current_manifest_files(options)))

        async def build(hold: BuildHold) -> None:
            await capture(options.workspace, options.selection, inspected, hold=hold)

        tg.start_soon(early.run, build)

    async def settle_early() -> None:
        """No early build runs any more (one that did was called off): before any other build,
        and before the session's tasks are cancelled (a cargo cancelled while it starts makes
        asyncio print a traceback, CPython gh-145541)."""
        nonlocal early
        if early is not None:
            finishing, early = early, None
            with anyio.move_on_after(10, shield=True):  # it ends as soon as cargo does
                await finishing.settle()

    async def rebuild(client: Any, why: str | None, *, verdict: bool = False) -> Program:
        """A fresh build under capture; the running program is left alone. Raises RunError
        (BuildFailed when cargo failed). ``verdict``: the build a save's verdict asked for,
        which its early build, if one is held, already started."""
        nonlocal early
        held = None
        if verdict and early is not None and not early.decided:
            held, early = early, None
        else:
            await settle_early()
        return await fresh_program(
            options, style, force=True, why=why, digests=built, inspected=inspected, early=held
        )

    def switch_to(fresh: Program, tg: anyio.abc.TaskGroup, client: Any) -> None:
        """Stop the running program and start ``fresh``, with a view of its own."""
        nonlocal program, view
        program = fresh
        view = RunView(program, style, built_ms=view.built_ms)
        view.pid = runner.start(program)  # stops the old one first
        tg.start_soon(runner.watch_exit, program.name)
        # Asked for its status, the daemon looks for the new capture now, while the program
        # starts; the program's subscription waits for that look if it comes first.
        tg.start_soon(look_now, client)

    async def look_now(client: Any) -> None:
        try:
            await client.request({"type": "status"})
        except Exception:  # only sooner: without it the daemon still looks when the program subscribes
            pass

    async def relaunch(client: Any, tg: anyio.abc.TaskGroup) -> None:
        """Start the program that stopped again, from the current sources: its own binary when
        no file it was built from was saved since, else a fresh build under capture first. A
        build that fails leaves it stopped until a save builds."""
        reason = await anyio.to_thread.run_sync(why_rebuild_to_relaunch, options, program)
        if reason is None:  # the daemon replays the latest patch to it when it subscribes
            view.pid = runner.start(program)
            view.restart_failing = None
            tg.start_soon(runner.watch_exit, program.name)
            say(tagged(style, f"started {program.name} again (pid {view.pid}); no file it was built from changed "
                              "since, so it runs the current sources"))
            return
        try:
            fresh = await rebuild(client, f"{reason}; {program.name} starts again once it builds")
        except RunError as exc:
            shown, why = restart_failure(exc)
            if shown:
                say(shown)
            summary = tagged(style, f"{style.bad('rebuild failed')} ({why}); {program.name} stays stopped until a "
                                    "save builds. Fix it and save again")
            view.fail(summary)
            say(summary)
            return
        switch_to(fresh, tg, client)
        say(tagged(style, f"{program.name} had stopped: {style.warn('rebuilt')} it from the current sources and "
                          f"started it again (pid {view.pid}); its state was lost"))

    async def rebuild_and_switch(
        client: Any, tg: anyio.abc.TaskGroup, *, cause: str, after: str, done: str, verdict: bool = False
    ) -> None:
        """A save a patch can't carry: build under capture first; the running program is
        stopped only for a binary that built (``done`` names its ``{pid}``)."""
        keeps = f"{program.name} keeps running until it builds"
        try:
            fresh = await rebuild(client, f"{cause}; {keeps}", verdict=verdict)
        except RunError as exc:
            if runner.running:
                old = f"{program.name} (pid {view.pid}) keeps running the last good build"
            else:
                old = f"{program.name} starts again once a save builds"
            shown, why = restart_failure(exc)
            if shown:
                say(shown)
            summary = tagged(style, f"{style.bad('rebuild failed')} {after} ({why}); {old}. Fix it and save again")
            view.fail(summary)
            say(summary)
            return
        switch_to(fresh, tg, client)
        say(tagged(style, done.replace("{pid}", str(view.pid))))

    async def restart_on_request(client: Any, tg: anyio.abc.TaskGroup) -> None:
        """`thinpatch restart`: build afresh under capture; the old program stops only once
        the new build is there (a failed build leaves it running)."""
        async for _ in restart_requests:
            if view.code_broken:
                # A failed cargo build can remove the binary patches are built against.
                say(tagged(style, f"restart requested, but the last build failed: fix the error first; "
                                  f"{program.name} keeps running the last good code"))
                continue
            say(tagged(style, f"restart requested: {style.warn('rebuilding')} {program.name}"))
            try:
                fresh = await rebuild(client, None)
            except BuildFailed:
                say(tagged(style, f"{style.bad('build failed')} (see cargo's output above); {program.name} keeps "
                                  "running the code it had, but saves may not patch it until a build succeeds: "
                                  "fix the error and `thinpatch restart` again"))
                continue
            except RunError as exc:
                say(tagged(style, f"{style.bad('restart failed')}: {exc}"))
                continue
            switch_to(fresh, tg, client)
            say(tagged(style, f"restarted {program.name} with a fresh build (pid {view.pid})"))
    try:
        async with anyio.create_task_group() as tg:

            async def stop_on_signals() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        await settle_early()
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signals)
            try:
                async with connect(options.socket_path) as client:
                    await client.subscribe(str(options.workspace))
                    await wait_until_served(client, program)
                    if options.listen is not None:
                        runner.remote_env = await remote_environment(client, options)
                        say(tagged(style, f"listening for programs on other hosts on {options.listen}; they present "
                                          "the token `thinpatch token` prints (docs/remote.md)"))
                    view = RunView(program, style)
                    view.pid = runner.start(program)
                    tg.start_soon(runner.watch_exit, program.name)
                    tg.start_soon(restart_on_request, client, tg)
                    if options.workspace not in inspected:  # no build yet: a restart build starts cargo at once
                        tg.start_soon(remember_workspace, options.workspace, inspected)
                    running = f"running {program.label} (pid {view.pid}); edit and save to patch it, Ctrl-C to stop"
                    say(tagged(style, running))
                    async for event in client.events():
                        if runner.exited.is_set():
                            view.pid = None  # it ended; the next save that builds starts it again
                        for line in view.lines(event):
                            say(line)
                        kind = event.get("type")
                        if view.mine(event) and not event.get("replayed"):
                            if kind == "build-started":
                                if holds_early_build(options, runner.running, early, after_restart, cpus):
                                    await settle_early()
                                    start_early(tg)
                            elif kind in NO_RESTART_OUTCOMES and early is not None:
                                early.call_off()  # ends on its own; settled before the next build
                            if kind in ("patch-ready", "restart-required"):
                                after_restart = kind == "restart-required"
                        if kind == "full-rebuild-required" and not event.get("replayed"):
                            files = event.get("files") or []
                            if already_built(files, built, manifest_digests(files)):
                                continue  # as our own last build found or left them (its Cargo.lock)
                            changed = ", ".join(os.path.basename(f) for f in files) or "the build"
                            if not options.restart_on_rebuild:
                                say(tagged(style, f"{changed} changed: a patch can't carry that. Stop and run "
                                                  "`thinpatch run` again (or drop --no-restart)"))
                                continue
                            await rebuild_and_switch(
                                client, tg, cause=f"{changed} changed", after=f"after the {changed} change",
                                done=f"{changed} changed: {style.warn('restarted')} {program.name} (pid {{pid}}) "
                                     "with a fresh build; its state was lost",
                            )
                        elif kind == "restart-required" and view.mine(event) and not event.get("replayed"):
                            reason = str(event.get("reason"))
                            if not options.restart_on_rebuild:
                                say(tagged(style, f"the saved code runs after a restart: `thinpatch restart` (or "
                                                  f"drop --no-restart); {program.name} keeps running the code it had"))
                                continue
                            if runner.exited.is_set():
                                await relaunch(client, tg)
                                continue
                            await rebuild_and_switch(
                                client, tg, cause=reason, after="for that change",
                                done=f"{style.warn('restarted')} {program.name} (pid {{pid}}): {reason}; its state "
                                     "was lost",
                                verdict=True,
                            )
                        elif runner.exited.is_set() and view.save_built(event):
                            await relaunch(client, tg)
                    say(tagged(style, f"the daemon closed the connection: {client.disconnect_reason or 'it stopped'}"))
                    await settle_early()
                    tg.cancel_scope.cancel()
            except DaemonUnavailable as exc:
                raise RunError(str(exc)) from None
    finally:
        with anyio.CancelScope(shield=True):
            runner.stop()
            stop_process(started_daemon, group=True)
    if interrupted:
        say(tagged(style, "stopped"))
        return 130
    return 1
