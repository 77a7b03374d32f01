"""`thinpatch capture`: run one `cargo build` with the shims installed and report what was recorded.

The plan (commands, environment, which sources to touch, the summary) is pure and built from
data; the effects (cargo/rustc processes, file times) are thin async functions on anyio.
``run_capture`` is the synchronous entry point for the CLI, tests and ``thinpatch demo``.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from capture import store
from capture.build_gate import GateHolder
from capture.cargo_inputs import configs_seen, untrusted_input
from capture.private_fs import describe_os_error
from capture.trust import UntrustedPath
from daemon.cli.shim_launchers import shim_launcher
from daemon.cli.terminal import wants_color

RUSTC_SHIM = "thinpatch-rustc"
TOP_KINDS = frozenset({"bin", "cdylib", "dylib"})
# Targets whose crate root is touched so cargo recompiles them (tests/benches/examples aren't built).
TOUCHED_KINDS = frozenset({"bin", "lib", "rlib", "cdylib", "dylib", "staticlib", "proc-macro"})


class CaptureError(Exception):
    """The workspace could not be inspected (no Cargo.toml, cargo metadata failed, ...)."""


class CaptureUsageError(CaptureError):
    """The command line names something that can't be captured (not a directory, ...)."""


class CaptureRefused(CaptureError):
    """A file cargo would read could have been written by someone else: cargo is not run."""


@dataclass(frozen=True)
class WorkspaceInfo:
    root: Path
    target_dir: Path
    members: list[dict]  # cargo metadata packages that are workspace members
    host_triple: str


@dataclass
class CaptureResult:
    workspace: Path
    target_dir: Path
    capture_root: Path
    scope: str
    host_triple: str
    exit_code: int
    cargo_command: list[str]
    started_at: float
    duration: float
    captured: list[store.CrateKey] = field(default_factory=list)  # the crates this run recorded
    binaries: list[Path] = field(default_factory=list)
    captures: store.Captures | None = None
    warnings: list[str] = field(default_factory=list)
    recorded_nothing: bool = False  # cargo succeeded, but no record could be written
    info: WorkspaceInfo | None = None  # the workspace as this build found it

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# --------------------------------------------------------------------------- pure plan


def parse_host_triple(rustc_vv: str) -> str:
    for line in rustc_vv.splitlines():
        if line.startswith("host:"):
            return line.split(":", 1)[1].strip()
    raise CaptureError(f"`rustc -vV` printed no host line:\n{rustc_vv}")


def profile_dir_name(release: bool, cargo_args: Sequence[str]) -> str:
    """The target-dir subdirectory cargo builds into for the chosen profile."""
    profile = "release" if release else "dev"
    args = list(cargo_args)
    for i, arg in enumerate(args):
        if arg == "--profile" and i + 1 < len(args):
            profile = args[i + 1]
        elif arg.startswith("--profile="):
            profile = arg.split("=", 1)[1]
        elif arg in ("-r", "--release"):
            profile = "release"
    return {"dev": "debug", "test": "debug", "bench": "release"}.get(profile, profile)


def cargo_build_command(release: bool, target: str | None, cargo_args: Sequence[str]) -> list[str]:
    """What `cargo build` would build in the same directory, and nothing more: in a package,
    that package; at a virtual workspace's root, its default members."""
    cmd = ["cargo", "build"]
    if release:
        cmd.append("--release")
    if target:
        cmd += ["--target", target]
    cmd += list(cargo_args)
    return cmd


def capture_env(
    base: dict[str, str],
    *,
    rustc_shim: str,
    capture_root: Path,
    workspace: Path,
    host_triple: str,
    wrapper: str = "workspace",
    configs: Sequence[store.ConfigSeen] = (),
) -> dict[str, str]:
    """cargo's environment under capture. ``wrapper="all"`` wraps every crate (RUSTC_WRAPPER);
    the shim then skips crates from outside the workspace itself."""
    env = dict(base)
    # A caching wrapper (sccache) would answer from its cache without running our shim.
    env.pop("RUSTC_WRAPPER", None)
    env.pop("RUSTC_WORKSPACE_WRAPPER", None)
    variable = {"workspace": "RUSTC_WORKSPACE_WRAPPER", "all": "RUSTC_WRAPPER"}[wrapper]
    env[variable] = rustc_shim
    env[store.ENV_CAPTURE_ROOT] = str(capture_root)
    env[store.ENV_WORKSPACE] = str(workspace)
    env[store.ENV_HOST_TRIPLE] = host_triple
    # Each record names the cargo configs that applied, so a replay can tell if one changed hands.
    env[store.ENV_CARGO_CONFIGS] = json.dumps([dataclasses.asdict(c) for c in configs])
    return env


def member_packages(metadata: dict) -> list[dict]:
    members = set(metadata.get("workspace_members", []))
    return [p for p in metadata.get("packages", []) if p.get("id") in members]


def crate_roots_to_touch(members: list[dict]) -> list[Path]:
    """Crate root sources of every member's lib/bin/proc-macro target."""
    roots: list[Path] = []
    for package in members:
        for target in package.get("targets", []):
            if TOUCHED_KINDS.intersection(target.get("kind", [])):
                path = Path(target["src_path"])
                if path not in roots:
                    roots.append(path)
    return roots


def binaries_from_messages(lines: Sequence[str]) -> list[Path]:
    """Executables (and cdylibs/dylibs) of workspace crates from cargo's JSON messages."""
    found: list[Path] = []
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or msg.get("reason") != "compiler-artifact":
            continue
        kinds = set(msg.get("target", {}).get("kind", []))
        if msg.get("executable"):
            found.append(Path(msg["executable"]))
        elif kinds & {"cdylib", "dylib"}:
            found.extend(Path(f) for f in msg.get("filenames", []) if f.endswith((".so", ".dylib", ".dll")))
    return found


def unpatchable_programs(captures: store.Captures, captured: Sequence[store.CrateKey]) -> list[str]:
    """Programs this capture built that no patch can change (LTO, stripped), and the fix."""
    from daemon.build.refusals import lto_refusal, strip_refusal

    found = []
    for key in captured:
        record = captures.rustc.get(key)
        if record is None or not record.is_top:
            continue
        reason = lto_refusal(record.args) or strip_refusal(record.args)
        if reason:
            found.append(f"{record.crate_name} can't be hot-patched: {reason}")
    return found


def format_summary(result: CaptureResult) -> str:
    lines = []
    if result.ok:
        lines.append(f"thinpatch: captured {len(result.captured)} crate invocation(s) in {result.duration:.1f}s")
    elif result.recorded_nothing:
        lines.append("thinpatch: cargo build finished, but nothing was captured")
    else:
        lines.append(f"thinpatch: cargo build failed (exit {result.exit_code}); nothing new was captured")
    if result.captured:
        lines.append("  crates:  " + ", ".join(sorted(key.label for key in result.captured)))
    for binary in result.binaries:
        lines.append(f"  binary:  {binary}")
    lines.append(f"  capture: {store.captures_dir(result.capture_root) / result.scope}")
    for warning in result.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- effects


def find_shim(name: str, env: Mapping[str, str] | None = None) -> str:
    """Absolute path of one of our shims: its fast launcher (see ``shim_launchers``), else its
    console script, next to this Python first (a pyenv or other launcher shim on PATH would
    add its own start-up time to every rustc call)."""
    launcher = shim_launcher(name, env)
    if launcher is not None:
        return launcher
    candidate = Path(sys.executable).parent / name
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise CaptureError(f"{name} is not installed (pip install thinpatch)")
    return os.path.abspath(found)


def _tool_error(tool: str, exc: OSError) -> CaptureError:
    variable = {"cargo": "CARGO"}.get(os.path.basename(tool), "RUSTC")
    if os.path.basename(tool) not in ("cargo", "rustc"):
        where = f"{tool} (from ${variable})"
    else:
        where = f"`{tool}`"
    reason = "not found" if isinstance(exc, FileNotFoundError) else (exc.strerror or str(exc))
    return CaptureError(
        f"cannot run {where}: {reason}. Install the Rust toolchain (rustup) or point ${variable} at a working "
        f"{os.path.basename(tool) if os.path.basename(tool) in ('cargo', 'rustc') else variable.lower()}."
    )


async def _run_text(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    try:
        result = await anyio.run_process(cmd, cwd=cwd, env=env, check=False)
    except OSError as exc:
        raise _tool_error(cmd[0], exc) from None
    if result.returncode != 0:
        raise CaptureError(f"`{' '.join(cmd)}` failed ({result.returncode}):\n{result.stderr.decode(errors='replace')}")
    return result.stdout.decode()


async def inspect_workspace(directory: Path, env: dict[str, str]) -> WorkspaceInfo:
    located = await _run_text(["cargo", "locate-project", "--workspace", "--message-format", "plain"], directory, env)
    root = Path(located.strip()).parent
    metadata = json.loads(await _run_text(["cargo", "metadata", "--no-deps", "--format-version", "1"], root, env))
    rustc = env.get("RUSTC", "rustc")
    host = parse_host_triple(await _run_text([rustc, "-vV"], root, env))
    return WorkspaceInfo(
        root=root, target_dir=Path(metadata["target_directory"]), members=member_packages(metadata), host_triple=host
    )


def touch_sources(paths: list[Path], now: float) -> dict[Path, os.stat_result]:
    """Set each file's mtime to ``now`` so cargo sees the crate as dirty; returns the old stats.

    Touching (rather than `cargo clean -p`) keeps incremental caches, so the forced rebuild only
    re-runs rustc and the link; and the original times are put back afterwards.
    """
    old: dict[Path, os.stat_result] = {}
    for path in paths:
        try:
            old[path] = path.stat()
            os.utime(path, (now, now))
        except OSError:
            continue
    return old


def restore_times(old: dict[Path, os.stat_result], touched_at: float) -> None:
    """Put back the original times, unless the file was edited meanwhile (then its new time is real)."""
    for path, stat in old.items():
        try:
            current = path.stat()
            if abs(current.st_mtime - touched_at) < 1e-3 and current.st_size == stat.st_size:
                os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        except OSError:
            continue


class _Cargo:
    """One running cargo: its JSON messages collected (``collect_json``), and its stderr passed
    through, or, for a held build, kept until :meth:`show_output` (a build called off shows
    nothing)."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.messages: list[str] = []  # complete once the `_cargo` block is left
        self._kept: list[bytes] | None = None  # stderr not shown yet (a held build)

    async def read_messages(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.messages.extend(c.decode(errors="replace") for c in complete)
        if buffer:
            self.messages.append(buffer.decode(errors="replace"))

    async def pass_stderr(self) -> None:
        """A held build's stderr, kept until it goes ahead, then written through."""
        assert self.process.stderr is not None
        self._kept = []
        async for chunk in self.process.stderr:
            if self._kept is not None:
                self._kept.append(chunk)
            else:
                _write_stderr(chunk)

    def show_output(self) -> None:
        kept, self._kept = self._kept, None
        if kept:
            _write_stderr(b"".join(kept))


def _write_stderr(data: bytes) -> None:
    sys.stderr.flush()
    out = getattr(sys.stderr, "buffer", None)
    if out is None:
        sys.stderr.write(data.decode(errors="replace"))
    else:
        out.write(data)
        out.flush()


@asynccontextmanager
async def _cargo(
    cmd: list[str], cwd: Path, env: dict[str, str], collect_json: bool, gate: GateHolder | None
) -> AsyncIterator[_Cargo]:
    """cargo running in ``cwd``; on leaving, it has exited and its output is read to the end
    (its ``messages`` are whole), or it is killed if the block was left by a cancellation."""
    try:
        process = await anyio.open_process(
            cmd, cwd=cwd, env=env, stdin=None,
            stdout=subprocess.PIPE if collect_json else None,
            stderr=subprocess.PIPE if gate is not None else None,
            pass_fds=(gate.read_fd,) if gate is not None else (),
        )
    except OSError as exc:
        raise _tool_error(cmd[0], exc) from None
    cargo = _Cargo(process)
    failure: Exception | None = None  # raised past the task group as it is, not in a group
    async with process, anyio.create_task_group() as readers:
        if collect_json:
            readers.start_soon(cargo.read_messages)
        if gate is not None:
            readers.start_soon(cargo.pass_stderr)
        try:
            yield cargo
        except BaseException as exc:
            if gate is not None:
                gate.stop()  # held compiles exit, so cargo can end
            if not isinstance(exc, Exception):
                raise
            failure = exc
    if failure is not None:
        raise failure


@contextmanager
def capture_lock(capture_root: Path) -> Iterator[None]:
    """Hold the capture lock (see capture.store.capture_lock_path) while records are rewritten."""
    fd = hold_capture_lock(capture_root)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def hold_capture_lock(capture_root: Path) -> int | None:
    """Take the capture lock; None if it can't be made (a daemon may then reload mid-build,
    the capture itself still works)."""
    try:
        fd = store.open_capture_lock(capture_root)
    except UntrustedPath as exc:  # a link or someone else's directory: refused before any write
        raise CaptureError(str(exc)) from None
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_EX)  # a second capture of the same workspace waits its turn
    return fd


@dataclass(frozen=True)
class BuildRequest:
    """What to build under capture, beside which workspace."""

    directory: Path  # where the user asked: cargo runs there, as `cargo build` would
    release: bool
    target: str | None
    cargo_args: tuple[str, ...]
    env: dict[str, str]
    wrapper: str


class CalledOff(Exception):
    """A held build (:class:`BuildHold`) was called off before it compiled anything."""


class BuildHold:
    """Holds a capture build before its first compile (see capture.build_gate) until
    :meth:`go` or :meth:`call_off`. Until then no record is set aside or written, and cargo's
    output is kept back; a build called off leaves the capture and the target dir's outputs
    as they were."""

    def __init__(self) -> None:
        self._decided = anyio.Event()
        self._going = False

    def go(self) -> None:
        self._going = True
        self._decided.set()

    def call_off(self) -> None:
        self._decided.set()

    @property
    def decided(self) -> bool:
        return self._decided.is_set()

    async def decision(self) -> bool:
        await self._decided.wait()
        return self._going


class _Inspection:
    """`inspect_workspace` beside a build that assumed its answer (``known``)."""

    def __init__(self, known: WorkspaceInfo) -> None:
        self.known = known
        self.info: WorkspaceInfo | None = None
        self.done = anyio.Event()

    async def run(self, directory: Path, env: dict[str, str], hold: BuildHold | None = None) -> None:
        try:
            # A held build is checked once it goes ahead: until then it takes no CPU from the
            # patch build whose verdict it waits for.
            if hold is not None and not await hold.decision():
                return
            self.info = await inspect_workspace(directory, env)
        except Exception:  # the build without an assumption runs it again and says what is wrong
            self.info = None
        finally:
            self.done.set()

    async def confirms(self) -> bool:
        await self.done.wait()
        return self.info == self.known


async def capture_workspace(
    workspace: str | os.PathLike | None = None,
    release: bool = False,
    target: str | None = None,
    cargo_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wrapper: str = "workspace",
    known: WorkspaceInfo | None = None,
    hold: BuildHold | None = None,
) -> CaptureResult:
    """Build the workspace under capture. ``known``: the workspace as an earlier capture
    found it (its ``info``); cargo then starts at once while `cargo metadata` runs beside it,
    and a build whose assumption turns out wrong is undone and made again. ``hold``: cargo
    starts now, but compiles nothing until its decision (raises :class:`CalledOff`)."""
    base_env = dict(os.environ if env is None else env)
    directory = Path(workspace or os.getcwd())
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise CaptureUsageError(
            f"{directory} {what}. Pass the workspace directory (the one with Cargo.toml) to --workspace, "
            "or run `thinpatch capture` inside it."
        )
    directory = directory.resolve()
    # Before cargo runs at all (even `cargo metadata` reads the workspace and its configs).
    refusal = untrusted_input(str(directory), base_env)
    if refusal is not None:
        raise CaptureRefused(refusal)
    build = BuildRequest(directory, release, target, tuple(cargo_args), base_env, wrapper)
    if known is not None:
        inspection = _Inspection(known)
        failure: Exception | None = None  # raised past the task group as it is, not in a group
        async with anyio.create_task_group() as tg:
            tg.start_soon(inspection.run, directory, base_env, hold)
            try:
                result = await _capture_as(known, build, confirm=inspection.confirms, hold=hold)
            except Exception as exc:
                failure = exc
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if result is not None:
            return result
    elif hold is not None and not await hold.decision():  # nothing to start cargo for yet
        raise CalledOff
    info = await inspect_workspace(directory, base_env)
    result = await _capture_as(info, build)
    assert result is not None  # only a confirmation can refuse a build
    return result


async def _capture_as(
    info: WorkspaceInfo,
    build: BuildRequest,
    confirm: Callable[[], Awaitable[bool]] | None = None,
    hold: BuildHold | None = None,
) -> CaptureResult | None:
    """The capture build of the workspace ``info`` describes; None (and the records as they
    were) when ``confirm`` says ``info`` is not the workspace as it is now."""
    release, target, cargo_args, base_env = build.release, build.target, build.cargo_args, build.env
    directory = build.directory
    capture_root = info.target_dir / store.CAPTURE_DIRNAME
    scope = store.scope_name(target, profile_dir_name(release, cargo_args))
    run_env = capture_env(
        base_env,
        rustc_shim=find_shim(RUSTC_SHIM, base_env),
        capture_root=capture_root,
        workspace=info.root,
        host_triple=info.host_triple,
        wrapper=build.wrapper,
        configs=configs_seen(str(directory), base_env),
    )
    collect_json = not any(a.startswith("--message-format") for a in cargo_args)
    cmd = cargo_build_command(release, target, cargo_args)
    if collect_json:
        cmd.append("--message-format=json-render-diagnostics")
    gate = GateHolder() if hold is not None else None
    if gate is not None:
        run_env.update(gate.env())
        # Its stderr is a pipe until it goes ahead: colour as cargo would on ours.
        if "CARGO_TERM_COLOR" not in run_env and wants_color("auto", sys.stderr, run_env):
            run_env["CARGO_TERM_COLOR"] = "always"

    # The capture lock is held until the records are final (a failed build restores the last
    # good ones): a daemon reloads only after its release, when every binary is linked. A held
    # build takes it, and sets the last good capture aside, only once it goes ahead.
    with ExitStack() as locked:
        last_good, aside = None, hold is None  # aside: the records may change from here on
        if aside:
            last_good = _lock_and_set_aside(locked, capture_root, scope)
        held = _hold_programs(capture_root, scope) if hold is not None else None
        started = time.time()
        touched_at = started
        old_times = touch_sources(crate_roots_to_touch(info.members), touched_at)
        try:
            async with _cargo(cmd, directory, run_env, collect_json, gate) as cargo:
                if hold is not None and gate is not None:
                    if not await hold.decision():
                        gate.stop()  # each held compile exits at once, and cargo after it
                        with suppress(ProcessLookupError):  # (it may have ended on its own)
                            cargo.process.send_signal(signal.SIGINT)  # as Ctrl-C: it may still be reading
                        raise CalledOff
                    last_good = _lock_and_set_aside(locked, capture_root, scope, held)
                    aside = True
                    cargo.show_output()
                    gate.go()
                exit_code = await cargo.process.wait()
        except BaseException:
            if aside:  # (a held build that never went ahead changed no record)
                restore_last_good(capture_root, scope, last_good)
            raise
        finally:
            if gate is not None:
                gate.close()
            restore_times(old_times, touched_at)
            if not aside:  # called off (or it failed before it went ahead): as it was
                put_back_held(held)
            elif held is not None:
                shutil.rmtree(held, ignore_errors=True)  # the last good capture keeps them now
        return await _finish_capture(
            info, build, capture_root, scope, last_good, exit_code, cmd, cargo, started, confirm
        )


def _lock_and_set_aside(
    locked: ExitStack, capture_root: Path, scope: str, held: Path | None = None
) -> Path | None:
    locked.enter_context(capture_lock(capture_root))
    return _set_last_good_aside(capture_root, scope, held)


def _hold_programs(capture_root: Path, scope: str) -> Path | None:
    """:func:`hold_programs`, before cargo starts: a held build that can't link the programs
    aside (a full disk) does not start, since cargo would remove one it could not put back."""
    try:
        return hold_programs(capture_root, scope)
    except UntrustedPath as exc:
        raise CaptureError(str(exc)) from None
    except OSError as exc:
        raise CaptureError(
            f"cannot set the program aside before an early build: {describe_os_error(exc)}. Nothing was changed."
        ) from None


def _set_last_good_aside(capture_root: Path, scope: str, held: Path | None = None) -> Path | None:
    try:
        return keep_last_good(capture_root, scope, held)
    except UntrustedPath as exc:
        raise CaptureError(str(exc)) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CaptureError(
                f"cannot set the last good capture aside: {describe_os_error(exc)}. Nothing was changed."
            ) from None
        return None  # nothing readable to keep; the build's outcome says the rest


async def _finish_capture(
    info: WorkspaceInfo,
    build: BuildRequest,
    capture_root: Path,
    scope: str,
    last_good: Path | None,
    exit_code: int,
    cmd: list[str],
    cargo: _Cargo,
    started: float,
    confirm: Callable[[], Awaitable[bool]] | None,
) -> CaptureResult | None:
    """What cargo's build left: the records it wrote, or the last good ones put back."""
    try:
        confirmed = confirm is None or await confirm()
    except BaseException:
        restore_last_good(capture_root, scope, last_good)
        raise
    if not confirmed:
        restore_last_good(capture_root, scope, last_good)
        return None
    duration = time.time() - started
    base_env = build.env
    warnings: list[str] = []
    recorded_nothing = False
    captures = store.load_captures(capture_root, scope)
    captured = sorted(k for k, r in captures.rustc.items() if r.recorded_at >= started)
    binaries = binaries_from_messages(cargo.messages)
    if not binaries:
        binaries = [Path(link.output) for link in captures.links.values() if link.recorded_at >= started]
    if exit_code == 0 and not captured:
        logs = [p for p in (store.log_path(capture_root), store.state_dir(base_env) / store.LOG_NAME) if p.exists()]
        warnings.append(
            f"cargo built, but no crate was recorded under {capture_root}"
            + (f": see {logs[0]}" if logs else "")
            + ". Check that the target directory is writable, then capture again."
        )
        exit_code, recorded_nothing = 1, True
    if exit_code != 0:
        # A failed build is not a capture: the previous good one stays, and is what is served.
        restore_last_good(capture_root, scope, last_good)
        captures = store.load_captures(capture_root, scope)
        captured, binaries = [], []
        if last_good is not None:
            warnings.append(f"kept the last good capture in {store.captures_dir(capture_root) / scope}")
        full = disk_full_warning(capture_root)
        if full:
            warnings.append(full)
    else:
        discard_last_good(last_good)
    warnings.extend(captures.warnings)
    warnings.extend(unpatchable_programs(captures, captured))
    if exit_code == 0:
        try:
            store.register_workspace(info.root, capture_root, base_env)
        except OSError as exc:
            warnings.append(f"could not register the workspace: {describe_os_error(exc)}")
    return CaptureResult(
        workspace=info.root,
        target_dir=info.target_dir,
        capture_root=capture_root,
        scope=scope,
        host_triple=info.host_triple,
        exit_code=exit_code,
        cargo_command=cmd,
        started_at=started,
        duration=duration,
        captured=captured,
        binaries=binaries,
        captures=captures,
        warnings=warnings,
        recorded_nothing=recorded_nothing,
        info=info,
    )


def _last_good_dir(capture_root: Path, scope: str) -> Path:
    return capture_root / "last-good" / scope


# Kept binaries sit in the backup beside the records, one per link record (by its link key).
_KEPT_BINARIES = "binaries"


def keep_last_good(capture_root: Path, scope: str, held: Path | None = None) -> Path | None:
    """Set the scope's records, and the programs they name, aside before a build rewrites them.

    Hard links, not copies: this needs no room on the disk, and since records are only ever
    replaced by rename, the set aside ones keep their content whatever the build writes.
    ``held``: where :func:`hold_programs` linked them before a held build, whose cargo may
    have removed them since.
    """
    backup = _last_good_dir(capture_root, scope)
    # Neither captures/ nor last-good/ may be a link: what follows removes and renames in them.
    for directory in (store.captures_dir(capture_root), backup.parent):
        store.ensure_private_dir(directory, within=store.capture_base(capture_root))
    current = store.captures_dir(capture_root) / scope
    if backup.is_dir():
        # A capture that was killed mid-build left its records in captures/: the set aside
        # ones are still the last good capture, so they go back first.
        restore_last_good(capture_root, scope, backup)
    if held is None:  # a held build whose `run` was killed: the programs cargo removed go back
        put_back_held(_held_dir(capture_root, scope))
    if not current.is_dir():
        return None
    try:
        shutil.copytree(current, backup, symlinks=True, copy_function=os.link)
        _link_programs(store.load_captures(capture_root, scope).links.values(), backup, held)
    except BaseException:
        shutil.rmtree(backup, ignore_errors=True)
        raise
    return backup


def _link_programs(links: Iterable[store.LinkRecord], backup: Path, held: Path | None = None) -> None:
    """Hard-link each program the link records name into ``backup``'s ``binaries/``, by link
    key; one cargo removed already is taken from ``held`` (see :func:`hold_programs`)."""
    kept = backup / _KEPT_BINARIES
    kept.mkdir(mode=0o700)
    for link in links:
        key = store.link_key(link.output)
        source = link.output if held is None or os.path.lexists(link.output) else held / _KEPT_BINARIES / key
        try:
            os.link(source, kept / key, follow_symlinks=False)
        except OSError:
            continue  # another file system, or gone already: the records are kept all the same


def restore_last_good(capture_root: Path, scope: str, backup: Path | None) -> None:
    """Put the set aside capture back in place of what a failed build wrote (or, when there
    was none before, leave none), and any program the build deleted."""
    current = store.captures_dir(capture_root) / scope
    if backup is None:
        shutil.rmtree(current, ignore_errors=True)
        return
    _put_back_binaries(backup)
    shutil.rmtree(backup / _KEPT_BINARIES, ignore_errors=True)
    failed = current.with_name(f".{scope}.failed.{os.getpid()}")
    try:
        os.rename(current, failed)
        moved = True
    except FileNotFoundError:
        moved = False
    except OSError:
        return  # the failed build's records stay; the last good ones stay in last-good/
    try:
        os.rename(backup, current)
    except OSError:
        if moved:
            os.rename(failed, current)
        return
    if moved:
        shutil.rmtree(failed, ignore_errors=True)


def _put_back_binaries(backup: Path) -> None:
    """Link each kept program back to its path if the failed build deleted it (``backup``: a
    last good capture, or programs a held build linked aside)."""
    for path in (backup / "link").glob("*.json"):
        try:
            output = store.LinkRecord.from_json(json.loads(path.read_text(encoding="utf-8"))).output
            source = backup / _KEPT_BINARIES / store.link_key(output)
            if not os.path.lexists(output) and source.exists():
                os.link(source, output, follow_symlinks=False)
        except (OSError, ValueError):
            continue


def _held_dir(capture_root: Path, scope: str) -> Path:
    return capture_root / "held" / scope


def hold_programs(capture_root: Path, scope: str) -> Path | None:
    """Before a held build: link the scope's programs aside, laid out as a last good capture
    keeps them (their link records, and the programs under ``binaries/``). cargo removes the
    program of a crate it is about to compile, before the compile waits at the gate; a build
    called off puts it back (:func:`put_back_held`), one that goes ahead keeps it as the last
    good one."""
    held = _held_dir(capture_root, scope)
    store.ensure_private_dir(held.parent, within=store.capture_base(capture_root))
    put_back_held(held)  # one a killed run left behind is put back first
    links = store.load_captures(capture_root, scope).links.values()
    if not links:
        return None
    shutil.copytree(
        store.captures_dir(capture_root) / scope / "link", held / "link", symlinks=True, copy_function=os.link
    )
    _link_programs(links, held)
    return held


def put_back_held(held: Path | None) -> None:
    """Link each held program back to its path if it is gone; the held copies are dropped."""
    if held is None or not held.is_dir():
        return
    _put_back_binaries(held)
    shutil.rmtree(held, ignore_errors=True)


def disk_full_warning(capture_root: Path) -> str | None:
    """A plain warning when the disk holding the capture has (next to) no room left."""
    try:
        info = os.statvfs(capture_root)
    except OSError:
        return None
    free = info.f_bavail * info.f_frsize
    if free >= _NEARLY_FULL:
        return None
    return (
        f"the disk holding {capture_root} is full ({free / 2**20:.1f} MiB free): "
        "free some space, then capture again"
    )


_NEARLY_FULL = 16 << 20  # bytes: a build needs more room than this, so less is called full


def discard_last_good(backup: Path | None) -> None:
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def run_capture(
    workspace: str | os.PathLike | None = None,
    release: bool = False,
    target: str | None = None,
    cargo_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wrapper: str = "workspace",
) -> CaptureResult:
    """Synchronous `thinpatch capture`: build ``workspace`` under capture and report the result."""
    return anyio.run(lambda: capture_workspace(workspace, release, target, cargo_args, env, wrapper))
