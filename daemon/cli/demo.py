"""`thinpatch demo`, the effects: copy the bundled app, capture its build, run the daemon in
this process, launch the app, play the scripted edits and watch the app pick them up.

Everything lives in one temp dir (the app, its target dir, a private capture registry and the
daemon's socket), so the user's own registry and daemon are never touched. The app exits by
itself when the daemon's socket closes, so even a killed demo leaves no process behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import anyio

from daemon.cli.demo_script import (
    APP_BINARY,
    COMPILE_ERROR,
    DEMO_GREETING,
    RUSTUP_HINT,
    SCENE_FILE,
    STEPS,
    DemoReport,
    DemoStep,
    StepResult,
    compile_error_location,
    describe_unexpected_outcome,
    first_rendered_error,
    is_outcome,
    parse_tick,
    pending_steps,
    step_heading,
    step_outcome_lines,
)
from daemon.cli.terminal import PLAIN, Style
from daemon.socket.socket_paths import MAX_SOCKET_PATH_BYTES

T = TypeVar("T")

CLIENT_CRATE = "thinpatch-client"  # the demo app's path dependency: "../thinpatch-client"

APP_START_TIMEOUT_S = 20.0
OUTPUT_TIMEOUT_S = 10.0  # a patch applied -> the app's next ticks show it


@dataclass
class DemoOptions:
    interactive: bool = False
    keep: bool = False
    tick_ms: int = 300
    step_timeout_s: float = 120.0
    progress: TextIO = sys.stdout
    style: Style = PLAIN


class DemoFailed(Exception):
    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint


class Feed(Generic[T]):
    """An append-only list that tasks can wait on."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._changed = anyio.Event()
        self.closed = False

    def append(self, item: T) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = anyio.Event()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def wait_for(self, predicate: Callable[[T], bool], start: int, timeout: float) -> tuple[int, T] | None:
        """First item at index ≥ ``start`` matching ``predicate``; None on timeout or close."""
        index = start
        with anyio.move_on_after(timeout):
            while True:
                while index < len(self.items):
                    if predicate(self.items[index]):
                        return index, self.items[index]
                    index += 1
                if self.closed:
                    return None
                await self._changed.wait()
        return None


def copy_bundled_app(destination: Path) -> None:
    """Copy daemon/data/demo_app (package data, so it works from a wheel too) to
    ``destination``, and the client crate it depends on beside it, as in the package."""

    def copy(node: Traversable, target: Path, skip: set[str]) -> None:
        if node.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for child in node.iterdir():
                if child.name not in skip:
                    copy(child, target / child.name, skip)
        else:
            target.write_bytes(node.read_bytes())

    data = resources.files("daemon") / "data"
    copy(data / "demo_app", destination, {"target"})
    # A library's own lock file and build output are not part of it.
    copy(data / CLIENT_CRATE, destination.parent / CLIENT_CRATE, {"target", "Cargo.lock"})


def save_like_an_editor(path: Path, text: str) -> None:
    """Write a temp file beside the target and rename it over it, as most editors do."""
    tmp = path.with_name(f".{path.name}.demo-save")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunningApp:
    """The demo app's process and its output lines."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: Feed[str] = Feed()
        self.pid = process.pid

    async def pump(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    self.lines.append(line.decode(errors="replace"))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass
        finally:
            self.lines.close()

    def alive(self) -> bool:
        return self.process.returncode is None

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            with anyio.move_on_after(3):
                await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    def last_tick_text(self) -> str:
        for line in reversed(self.lines.items):
            if line.startswith("TICK "):
                return line
        return "(no output yet)"


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.report = DemoReport(steps=pending_steps())
        self.app: RunningApp | None = None
        self._scripted_done = False
        self._extra_dirs: list[Path] = []

    def say(self, text: str = "") -> None:
        print(text, file=self.options.progress, flush=True)

    def _phase(self, number: int) -> str:
        return self.options.style.strong(f"[{number}/4]")

    # ------------------------------------------------------------------ phases

    async def run(self) -> DemoReport:
        started = time.monotonic()
        self.events: Feed[dict[str, Any]] = Feed()
        self.stop_requested = anyio.Event()
        env = dict(os.environ)
        if shutil.which("cargo", path=env.get("PATH")) is None:
            self.report.problem = "cargo was not found on PATH: the demo builds a small Rust program."
            self.report.hint = RUSTUP_HINT
            return self.report
        directory = Path(tempfile.mkdtemp(prefix="thinpatch-demo-"))
        self.report.directory = str(directory)
        self.report.kept = self.options.keep
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_signals, tg.cancel_scope)
                try:
                    await self._run_in(directory, env, started)
                except DemoFailed as failure:
                    self.report.problem = failure.problem
                    self.report.hint = failure.hint
                except Exception as exc:  # a bug or an OS error: still clean up and report it
                    self.report.problem = f"internal error: {exc!r}"
                tg.cancel_scope.cancel()
        finally:
            self.report.duration_s = round(time.monotonic() - started, 2)
            for extra in self._extra_dirs:
                shutil.rmtree(extra, ignore_errors=True)
            if not self.options.keep:
                shutil.rmtree(directory, ignore_errors=True)
        if self.report.interrupted and self.report.problem is None and not self._scripted_done:
            self.report.problem = "interrupted before every step ran"
        return self.report

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.report.interrupted = True
                if self.options.interactive and self._scripted_done:
                    self.stop_requested.set()  # a normal end: clean up below
                else:
                    scope.cancel()
                return

    async def _run_in(self, directory: Path, env: dict[str, str], started: float) -> None:
        app_dir = directory / "app"
        copy_bundled_app(app_dir)
        env["THINPATCH_STATE_DIR"] = str(directory / "state")  # a private capture registry
        env["CARGO_TARGET_DIR"] = str(app_dir / "target")
        scene = app_dir / SCENE_FILE
        self.report.source_file = str(scene)
        if self.options.keep:
            self.say(f"thinpatch demo: the example app is in {app_dir}")
        else:
            self.say("thinpatch demo: a small example app, copied into a temporary directory (--keep keeps it)")

        binary = await self._capture(app_dir, env)
        socket_path = directory / "thinpatch.sock"
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:  # a long TMPDIR
            socket_dir = Path(tempfile.mkdtemp(prefix="thinpatch-demo-", dir="/tmp"))
            socket_path = socket_dir / "thinpatch.sock"
            self._extra_dirs.append(socket_dir)
        self.report.socket = str(socket_path)

        from daemon.service.engine import Engine, EngineOptions
        from daemon.socket.server import DaemonServer

        engine = Engine(workspaces=[app_dir], options=EngineOptions(), env=env)
        server = DaemonServer(engine, socket_path)

        def publish(event: dict[str, Any]) -> dict[str, Any]:
            sent = server.publish(event)
            self.events.append(sent)
            return sent

        engine.publish = publish
        failure: DemoFailed | None = None
        async with anyio.create_task_group() as daemon_tg:
            try:
                await daemon_tg.start(server.run)
                await daemon_tg.start(engine.run)
                if not engine.served:
                    problems = "; ".join(engine.problems.values()) or "no captured workspace found"
                    raise DemoFailed(f"the daemon could not serve the app: {problems}")
                self.say(f"{self._phase(2)} daemon running in this process, on its own socket")
                await self._launch_app(binary, socket_path, env, daemon_tg)
                await self._warm_up(engine, str(app_dir.resolve()))
                await self._play_steps(scene)
                self._scripted_done = True
                self.report.steps_s = round(time.monotonic() - started, 2)
                if self.options.interactive and not self.report.interrupted:
                    await self._interactive(scene)
            except DemoFailed as exc:  # raised past the task group it would arrive wrapped in a group
                failure = exc
            finally:
                with anyio.CancelScope(shield=True):
                    if self.app is not None:
                        await self.app.stop()
                    engine.stop_watchers()
                daemon_tg.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _capture(self, app_dir: Path, env: dict[str, str]) -> Path:
        from daemon.cli.capture_run import CaptureError, capture_workspace

        self.say(
            f"{self._phase(1)} building the app once under capture (cargo build with thinpatch's rustc wrapper)..."
        )
        started = time.monotonic()
        try:
            # --quiet: cargo's progress names the temporary directory; its errors still show.
            result = await capture_workspace(app_dir, cargo_args=["--quiet"], env=env)
        except (CaptureError, OSError) as exc:
            raise DemoFailed(f"could not build the example app: {exc}", _rust_hint(str(exc))) from None
        self.report.capture_s = round(time.monotonic() - started, 2)
        if not result.ok:
            raise DemoFailed(
                f"`{' '.join(result.cargo_command)}` failed with exit code {result.exit_code} "
                "(cargo's errors are above).",
                "Check that `cargo build` works in a new Rust project (`cargo new hello && cd hello && cargo build`); "
                "`rustup update` fixes an outdated or broken toolchain.",
            )
        binaries = [b for b in result.binaries if b.name == APP_BINARY]
        if not binaries:
            raise DemoFailed(f"the capture built no `{APP_BINARY}` binary (built: {[str(b) for b in result.binaries]})")
        self.say(f"      captured {len(result.captured)} crate in {self.report.capture_s:.1f} s: {binaries[0].name}")
        return binaries[0]

    async def _launch_app(self, binary: Path, socket_path: Path, env: dict[str, str], tg: anyio.abc.TaskGroup) -> None:
        app_env = dict(env, THINPATCH_DEMO_GREETING=DEMO_GREETING)
        process = await anyio.open_process(
            [str(binary), str(socket_path), str(self.options.tick_ms)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=app_env,
            cwd=binary.parent,
            start_new_session=True,  # Ctrl-C reaches the demo, which then stops the app itself
        )
        self.app = RunningApp(process)
        self.report.app_pid = process.pid
        tg.start_soon(self.app.pump)
        found = await self.app.lines.wait_for(
            lambda line: line == "SUBSCRIBED" or line.startswith("SUBSCRIBE-ERROR"), 0, APP_START_TIMEOUT_S
        )
        if found is None or found[1] != "SUBSCRIBED":
            raise DemoFailed(
                "the app did not subscribe to the daemon; it said:\n    "
                + "\n    ".join(self.app.lines.items[-10:] or ["(nothing)"])
            )
        tick = await self.app.lines.wait_for(lambda line: parse_tick(line) is not None, found[0], APP_START_TIMEOUT_S)
        if tick is None:
            raise DemoFailed("the app subscribed but printed no tick")
        self.say(f"{self._phase(3)} app running (pid {process.pid}), subscribed to the daemon")
        self.say(f"      it prints: {tick[1]}")

    async def _warm_up(self, engine: Any, workspace: str) -> None:
        """Build one patch of the unchanged code: the daemon reads the program's symbols once,
        so the timings of the scripted steps are those of an ordinary save."""
        mark = len(self.events.items)
        await engine.request_rebuild(workspace, None)
        found = await self.events.wait_for(is_outcome, mark, self.options.step_timeout_s)
        if found is None:
            raise DemoFailed("the daemon built no patch of the unchanged app within "
                             f"{self.options.step_timeout_s:.0f} s")
        event = found[1]
        if event["type"] != "patch-ready":
            raise DemoFailed(f"the first patch (of the unchanged code) failed: {describe_unexpected_outcome(event)}")
        self.report.first_patch_ms = event["timings"].get("total_ms")
        assert self.app is not None
        applied = await self.app.lines.wait_for(_patch_line(event["id"]), 0, OUTPUT_TIMEOUT_S)
        if applied is None or not applied[1].startswith("PATCHED"):
            raise DemoFailed(f"the app did not apply the first patch: {applied[1] if applied else 'no answer'}")
        self.say(
            f"{self._phase(4)} first patch (unchanged code) built in {event['timings'].get('total_ms', 0):.0f} ms "
            "and applied"
        )
        self.say("      now editing the app's source like an editor would")

    # ------------------------------------------------------------------ steps

    async def _play_steps(self, scene: Path) -> None:
        for step, result in zip(STEPS, self.report.steps):
            self.say()
            self.say(step_heading(result, len(STEPS), self.options.style))
            try:
                await self._play(step, result, scene)
                result.status = "passed"
            except DemoFailed as failure:
                result.status = "failed"
                result.problem = failure.problem
            except anyio.get_cancelled_exc_class():
                result.status = "interrupted"
                raise
            for line in step_outcome_lines(result, self.options.style, step.field):
                self.say(line)
            if not result.passed:
                raise DemoFailed(f"step {result.number} ({result.name}): {result.problem}", _step_hint(result))

    async def _play(self, step: DemoStep, result: StepResult, scene: Path) -> None:
        assert self.app is not None
        source = scene.read_text()
        try:
            edited = step.apply(source)
        except ValueError as exc:
            raise DemoFailed(str(exc)) from None
        event_mark = len(self.events.items)
        line_mark = len(self.app.lines.items)
        saved_at = time.monotonic()
        save_like_an_editor(scene, edited)
        self.say(f"    saved {SCENE_FILE}:{step.edited_line(source)}")

        found = await self.events.wait_for(is_outcome, event_mark, self.options.step_timeout_s)
        if found is None:
            raise DemoFailed(f"the daemon reported no build within {self.options.step_timeout_s:.0f} s of the save")
        event = found[1]
        result.outcome = event["type"]
        result.build_id = event.get("id")
        result.timings = dict(event.get("timings") or {})

        if step.kind == COMPILE_ERROR:
            if event["type"] != "build-failed":
                raise DemoFailed(f"expected a compile error, got {event['type']}")
            result.error = compile_error_location(event, relative_to=scene.parent.parent)
            expected_line = step.edited_line(source)
            if result.error is None:
                raise DemoFailed(f"build-failed without a location: {first_rendered_error(event)}")
            if not result.error.file.endswith(SCENE_FILE) or result.error.line != expected_line:
                raise DemoFailed(
                    f"the error points at {result.error.file}:{result.error.line}, "
                    f"expected {SCENE_FILE}:{expected_line}"
                )
            told = await self.app.lines.wait_for(
                lambda line: line.startswith("EVENT build-failed"), line_mark, OUTPUT_TIMEOUT_S
            )
            if told is None:
                raise DemoFailed("the app was not told about the failed build")
            after = told[0]
        else:
            if event["type"] != "patch-ready":
                raise DemoFailed(describe_unexpected_outcome(event))
            applied = await self.app.lines.wait_for(_patch_line(event["id"]), line_mark, OUTPUT_TIMEOUT_S)
            if applied is None:
                raise DemoFailed(f"the app did not apply patch {event['id']} ({self._app_state()})")
            if applied[1].startswith("PATCH-ERROR"):
                raise DemoFailed(f"the app could not apply the patch: {applied[1]}")
            after = applied[0]

        def shows(line: str) -> bool:
            tick = parse_tick(line)
            return tick is not None and step.shows(tick)

        seen = await self.app.lines.wait_for(shows, after, OUTPUT_TIMEOUT_S)
        if seen is None:
            raise DemoFailed(
                f"the app's output does not show the edit ({step.expected}); "
                f"last line: {self.app.last_tick_text()} ({self._app_state()})"
            )
        tick = parse_tick(seen[1])
        assert tick is not None
        result.seen_ms = round((time.monotonic() - saved_at) * 1000, 1)
        result.counter = tick.counter
        result.output = seen[1]
        previous = [s.counter for s in self.report.steps if s.counter is not None and s is not result]
        if previous and tick.counter <= previous[-1]:
            raise DemoFailed(f"the counter went from {previous[-1]} to {tick.counter}: the app's state was reset")

    def _app_state(self) -> str:
        assert self.app is not None
        return "the app is running" if self.app.alive() else f"the app exited with status {self.app.process.returncode}"

    # ------------------------------------------------------------------ interactive

    async def _interactive(self, scene: Path) -> None:
        assert self.app is not None
        self.say()
        self.say("Interactive: the app and the daemon keep running.")
        self.say("Edit this file and save; each save is patched into the running app"
                 + ("" if self.options.keep else " (the directory is removed when you stop)") + ":")
        self.say(f"    {scene}")
        self.say("Press Ctrl-C to stop both and clean up.")
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._echo_events, len(self.events.items))
            tg.start_soon(self._echo_app, len(self.app.lines.items))
            await self.stop_requested.wait()
            tg.cancel_scope.cancel()
        self.say("stopping: the app, then the daemon")

    async def _echo_events(self, start: int) -> None:
        index = start
        while True:
            found = await self.events.wait_for(lambda e: True, index, 3600)
            if found is None:
                continue
            index, event = found[0] + 1, found[1]
            kind = event.get("type")
            if kind == "build-started":
                files = ", ".join(Path(f).name for f in event.get("files", []))
                self.say(f"  building patch {event.get('id')} ({files})...")
            elif kind == "patch-ready":
                t = event.get("timings", {})
                self.say(
                    f"  patch {event.get('id')} ready in {t.get('total_ms', 0):.0f} ms "
                    f"(rustc {t.get('rustc_ms', 0):.0f}, link {t.get('link_ms', 0):.0f}, "
                    f"verify {t.get('verify_ms', 0):.0f})"
                )
            elif kind in ("build-failed", "patch-rejected", "full-rebuild-required"):
                # rustc's notes can run to dozens of lines; the head says what and where.
                text = describe_unexpected_outcome(event).splitlines()
                self.say(f"  {kind}: " + "\n    ".join(text[:6] + (["..."] if len(text) > 6 else [])))

    async def _echo_app(self, start: int) -> None:
        """The app's first tick line, and the first one after each patch or failed build."""
        assert self.app is not None
        index, show_next = start, True
        while True:
            found = await self.app.lines.wait_for(lambda line: True, index, 3600)
            if found is None:
                if self.app.lines.closed:
                    self.say(f"  the app stopped ({self._app_state()}); press Ctrl-C to clean up")
                    return
                continue
            index, line = found[0] + 1, found[1]
            if parse_tick(line) is None:
                if line.startswith(("PATCHED", "PATCH-ERROR")):
                    self.say(f"  app: {line}")
                if line.startswith(("PATCHED", "PATCH-ERROR", "EVENT build-failed", "EVENT patch-rejected")):
                    show_next = True
            elif show_next:
                show_next = False
                self.say(f"  app: {line.removeprefix('TICK ')}")


def _patch_line(build_id: Any) -> Callable[[str], bool]:
    return lambda line: line.startswith((f"PATCHED id={build_id} ", f"PATCH-ERROR id={build_id} "))


def _rust_hint(message: str) -> str | None:
    if "rustc" in message or "No such file" in message:
        return RUSTUP_HINT
    return None


def _step_hint(result: StepResult) -> str:
    if result.outcome is None:
        return (
            "The daemon did not see the save. On Linux, check the inotify limits "
            "(`sysctl fs.inotify.max_user_watches fs.inotify.max_user_instances`) and raise them if they are exhausted."
        )
    if result.outcome == "patch-rejected":
        return (
            "The patch would not load into the running app; "
            "run `thinpatch demo --keep` and look at the daemon's report."
        )
    return "Run `thinpatch demo --keep` to keep the app's directory and inspect it."


def run_demo(options: DemoOptions) -> DemoReport:
    async def main() -> DemoReport:
        return await Demo(options).run()

    return anyio.run(main)
