"""One workspace's session, driven with a fake patcher and a fake watcher: no cargo, no rustc.

The workspace is real files in a temporary directory (the session reads its source map and
hashes its manifests), with capture records made by hand: two programs, ``app`` and ``tool``,
both built from the library ``core``; ``app`` also from ``extra``; ``spare`` is captured but in
no program.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from capture.store import CaptureRecord, Captures, CrateKey
from daemon.analysis.verdicts import CARRIED, NEEDS_RESTART, ChangeVerdict, SaveVerdict
from daemon.binary.jump_table import JumpTable, PatchReport
from daemon.binary.load_check import LoadCheck
from daemon.build.diagnostics import Diagnostic, DiagnosticStream, Span
from daemon.build.errors import CompileError
from daemon.build.session_cache import SessionLayout
from daemon.service.patcher import PatchRejected, PatchResult
from daemon.service.programs import Program
from daemon.service.session import LoadedWorkspace, PatchOutcome, ServedProgram, WorkspaceSession
from daemon.service.workspaces import CapturedWorkspace
from daemon.socket.protocol import EntryPoint
from daemon.socket.protocol_schema import server_message_errors

SCOPE = "host-debug"
APP, TOOL = CrateKey("app", "bin"), CrateKey("tool", "bin")
CORE, EXTRA, SPARE = CrateKey("core", "lib"), CrateKey("extra", "lib"), CrateKey("spare", "lib")
TIMEOUT_S = 5


# --------------------------------------------------------------------------- fakes


class FakePatcher:
    """Builds a patch instantly, or raises what the test put in ``fail``."""

    def __init__(self, program: Program, captures: Captures, session_root: Path) -> None:
        self.program = program
        self.captures = captures
        self.session = SessionLayout(session_root)  # no dep-info in it: no new sources to learn
        self.calls: list[list[CrateKey]] = []
        self.fail: Exception | None = None
        self.sent: list[int] = []  # patch numbers the session published
        self.verdict = SaveVerdict(CARRIED, None, (ChangeVerdict("_ZN3app5frame17h0123456789abcdefE", "app::frame",
                                                                "changed", CARRIED),))
        self.entries: list[list[EntryPoint]] = []

    async def patch(self, crates: Sequence[CrateKey] = (), *, entries: Sequence[EntryPoint] = ()) -> PatchResult:
        self.calls.append(list(crates))
        self.entries.append(list(entries))
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        number = len(self.calls)
        lib = f"/tmp/patches/{self.program.name}-{number}.so"
        return PatchResult(
            workspace=self.program.workspace,
            program=self.program.crate,
            edited=tuple(crates) or (self.program.crate,),
            lib=lib,
            patch_number=number,
            jump_table=JumpTable(lib, {4096: 8192}, aslr_reference=4000, new_base_address=0),
            report=PatchReport(mapped=1),
            timings={"rustc_ms": 1.0, "link_ms": 2.0, "verify_ms": 3.0, "total_ms": 6.0},
            verdict=self.verdict,
        )


    def delivered(self, result: PatchResult) -> None:
        self.sent.append(result.patch_number)


class FakeWatcher:
    """Reports the batches a test hands to ``report``, and returns once the session acted."""

    def __init__(self, files: Iterable[str]) -> None:
        self._files = set(files)
        self.armed = anyio.Event()
        self.stopped = False
        self._send, self._receive = anyio.create_memory_object_stream[set[str]](16)
        self._handled = 0

    @property
    def files(self) -> frozenset[str]:
        return frozenset(self._files)

    def watch_more(self, files: Iterable[str]) -> set[str]:
        new = set(files) - self._files
        self._files |= new
        return new

    def stop(self) -> None:
        self.stopped = True
        self._send.close()

    async def changes(self) -> AsyncIterator[set[str]]:
        self.armed.set()
        async for batch in self._receive:
            yield batch
            self._handled += 1  # the session asks for the next batch once it handled this one

    async def report(self, *paths: Path) -> None:
        handled = self._handled
        await self._send.send({str(p) for p in paths})
        with anyio.fail_after(TIMEOUT_S):
            while self._handled == handled:
                await anyio.sleep(0.002)


# --------------------------------------------------------------------------- the workspace


@dataclass
class Workspace:
    root: Path
    loaded: LoadedWorkspace
    patchers: dict[str, FakePatcher] = field(default_factory=dict)
    watchers: list[FakeWatcher] = field(default_factory=list)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def program(self, name: str) -> Program:
        return next(p for p in self.loaded.programs if p.name == name)

    def make_patcher(self, program: Program, captures: Captures) -> FakePatcher:
        patcher = FakePatcher(program, captures, self.root / "target" / "thinpatch" / "sessions" / program.name)
        self.patchers[program.name] = patcher
        return patcher

    def make_watcher(self, files: Iterable[str]) -> FakeWatcher:
        watcher = FakeWatcher(files)
        self.watchers.append(watcher)
        return watcher


def make_workspace(root: Path, *, saved_before_session: tuple[CrateKey, ...] = ()) -> Workspace:
    """Sources, manifests and records; the crates in ``saved_before_session`` have sources newer
    than their records (saved after the capture, before the session started)."""
    deps = root / "target" / "debug" / "deps"
    sources = {
        APP: "app/src/main.rs",
        TOOL: "tool/src/main.rs",
        CORE: "core/src/lib.rs",
        EXTRA: "extra/src/lib.rs",
        SPARE: "spare/src/lib.rs",
    }
    externs = {APP: [CORE, EXTRA], TOOL: [CORE]}
    for relative in ["Cargo.toml", "Cargo.lock", *(f"{key.name}/Cargo.toml" for key in sources)]:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(f"# {relative}\n")
    rustc = {}
    for key, relative in sources.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(f"// {key.name}\n")
        args = ["--crate-name", key.name, "-C", f"extra-filename=-{key.name}1"]
        for dep in externs.get(key, []):
            args += ["--extern", f"{dep.name}={deps}/lib{dep.name}-{dep.name}1.rlib"]
        recorded_at = time.time() + (-3600 if key in saved_before_session else 3600)
        rustc[key] = CaptureRecord(
            key.name, key.kind, (key.kind,), "rustc", tuple(args), str(root), {}, recorded_at,
            manifest_dir=str(root / key.name), src=str(root / relative), is_top=key.kind == "bin",
        )
    captures = Captures(root / "target" / "thinpatch", SCOPE, rustc, {}, [])
    programs = [
        Program(str(root), SCOPE, key, key.name, str(root / "target" / "debug" / key.name), build_id)
        for key, build_id in ((APP, "aa11"), (TOOL, "bb22"))
    ]
    return Workspace(root, LoadedWorkspace(programs, [], {SCOPE: captures}))


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


@asynccontextmanager
async def serving(ws: Workspace, *, warm_up: bool = False) -> AsyncIterator[tuple[WorkspaceSession, list[dict]]]:
    """A running session whose watch is armed; its events, as published, in the list."""
    events: list[dict] = []
    session = WorkspaceSession(
        CapturedWorkspace(ws.root, ws.root / "target" / "thinpatch"),
        ws.loaded,
        make_patcher=ws.make_patcher,
        make_watcher=ws.make_watcher,
        publish=events.append,
        ids=itertools.count(1),
        count_receivers=lambda build_id: {"aa11": 2}.get(build_id, 0),
        entry_points=lambda build_id: {"aa11": [HOT_ENTRY]}.get(build_id, []),
        warm_up=warm_up,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.run)
        with anyio.fail_after(TIMEOUT_S):
            while not ws.watchers or not ws.watchers[0].armed.is_set():
                await anyio.sleep(0.002)
            assert session.scheduler is not None
            await session.scheduler.wait_idle()
        yield session, events
        session.stop()
    assert ws.watchers[0].stopped


async def save(session: WorkspaceSession, ws: Workspace, *relative: str) -> None:
    """Change these files, let the watcher report them, and wait for the builds to end."""
    for name in relative:
        path = ws.path(name)
        path.write_text(path.read_text() + "// saved\n")
    await ws.watchers[0].report(*(ws.path(name) for name in relative))
    assert session.scheduler is not None
    with anyio.fail_after(TIMEOUT_S):
        await session.scheduler.wait_idle()


def schema_checked(events: list[dict]) -> list[dict]:
    for n, event in enumerate(events):
        assert server_message_errors({**event, "seq": n + 1}) == [], event
    return events


# --------------------------------------------------------------------------- builds


@pytest.mark.asyncio
async def test_a_save_patches_exactly_the_programs_built_from_the_saved_crate(workspace: Workspace) -> None:
    async with serving(workspace) as (session, events):
        await save(session, workspace, "core/src/lib.rs")
    app = workspace.program("app")
    assert [(e["type"], e["program"]["name"]) for e in schema_checked(events)] == [
        ("build-started", "app"), ("patch-ready", "app"), ("build-started", "tool"), ("patch-ready", "tool"),
    ]
    assert events[0] == {
        "type": "build-started", "id": 1, "workspace": str(workspace.root), "crate": "core",
        "files": [str(workspace.path("core/src/lib.rs"))], "program": app.describe(),
    }
    ready = events[1]
    assert ready["id"] == 1 and ready["for_build_id"] == "aa11" and ready["subscribers"] == 2
    assert ready["lib"] == "/tmp/patches/app-1.so" and ready["crate"] == "app" and ready["edited_crate"] == "core"
    assert ready["jump_table"]["map"] == {"4096": 8192}
    assert ready["timings"] == {"rustc_ms": 1.0, "link_ms": 2.0, "verify_ms": 3.0, "total_ms": 6.0}
    assert events[2]["program"] == workspace.program("tool").describe() and events[2]["id"] == 2
    assert (events[3]["id"], events[3]["for_build_id"], events[3]["subscribers"]) == (2, "bb22", 0)
    assert workspace.patchers["app"].calls == [[CORE]] and workspace.patchers["tool"].calls == [[CORE]]
    assert session.programs[app.key].last_patch is ready and session.last_outcome == "patch-ready"


@pytest.mark.asyncio
async def test_a_save_in_one_programs_own_crate_patches_that_program_alone(workspace: Workspace) -> None:
    async with serving(workspace) as (session, events):
        await save(session, workspace, "tool/src/main.rs")
        await save(session, workspace, "extra/src/lib.rs", "app/src/main.rs")
    assert [(e["type"], e["program"]["name"], e["crate"]) for e in schema_checked(events)] == [
        ("build-started", "tool", "tool"), ("patch-ready", "tool", "tool"),
        ("build-started", "app", "extra"), ("patch-ready", "app", "app"),
    ]
    assert workspace.patchers["tool"].calls == [[TOOL]]
    assert workspace.patchers["app"].calls == [[APP, EXTRA]]  # one patch holds every saved crate
    assert events[2]["files"] == sorted(str(workspace.path(f)) for f in ("app/src/main.rs", "extra/src/lib.rs"))


@pytest.mark.asyncio
async def test_an_edit_in_a_crate_no_program_contains_builds_nothing(workspace: Workspace) -> None:
    async with serving(workspace) as (session, events):
        await save(session, workspace, "spare/src/lib.rs")
    assert events == []
    assert all(p.calls == [] for p in workspace.patchers.values())


@pytest.mark.asyncio
async def test_a_compile_error_is_build_failed_with_the_diagnostics(workspace: Workspace) -> None:
    span = Span("app/src/main.rs", 3, 5, 3, 6)
    error = Diagnostic("error", "expected `;`", span=span, rendered="error: expected `;`")
    async with serving(workspace) as (session, events):
        workspace.patchers["app"].fail = CompileError("app", DiagnosticStream((error,)), ["rustc"], 1)
        await save(session, workspace, "app/src/main.rs")
    assert [e["type"] for e in schema_checked(events)] == ["build-started", "build-failed"]
    assert events[1] == {
        "type": "build-failed",
        "id": 1,
        "workspace": str(workspace.root),
        "crate": "app",
        "message": "crate app does not compile:\napp/src/main.rs:3:5: error: expected `;`",
        "diagnostics": [error.to_dict()],
        "program": workspace.program("app").describe(),
    }
    assert session.last_outcome == "build-failed"


@pytest.mark.asyncio
async def test_a_patch_that_would_not_load_is_patch_rejected(workspace: Workspace) -> None:
    check = LoadCheck(ok=False, missing=[("_ZN3app6helper17h0E", "app::helper")], action="Run `thinpatch capture`.")
    async with serving(workspace) as (session, events):
        # The session reads only the rejection's reason, symbols and action, not the build.
        workspace.patchers["app"].fail = PatchRejected(None, check, 1.0)  # type: ignore[arg-type]
        await save(session, workspace, "app/src/main.rs")
    assert [e["type"] for e in schema_checked(events)] == ["build-started", "patch-rejected"]
    rejected = events[1]
    assert rejected["missing_symbols"] == ["app::helper"] and rejected["action"] == "Run `thinpatch capture`."
    assert rejected["reason"].startswith("the patch needs 1 symbol(s)") and rejected["id"] == 1
    assert (
        session.last_outcome == "patch-rejected" and session.programs[workspace.program("app").key].last_patch is None
    )


HOT_ENTRY = EntryPoint(offset=-64, kind="fn", name="fn(u32)", returns="()", pid=42)


@pytest.mark.asyncio
async def test_a_change_no_patch_can_carry_is_restart_required_and_never_sent(workspace: Workspace) -> None:
    main = ChangeVerdict("_ZN3app4main17h0123456789abcdefE", "app::main", "changed", NEEDS_RESTART,
                         "no entry point's code calls `app::main`", "app/src/main.rs", 7)
    async with serving(workspace) as (session, events):
        app = workspace.patchers["app"]
        app.verdict = SaveVerdict(NEEDS_RESTART, "main() is not reached from a hot entry point", (main,))
        await save(session, workspace, "app/src/main.rs")
        app.verdict = SaveVerdict(CARRIED, None, ())
        await save(session, workspace, "app/src/main.rs")
    assert [e["type"] for e in schema_checked(events)] == [
        "build-started", "restart-required", "build-started", "patch-ready"
    ]
    required = events[1]
    assert required["reason"] == "main() is not reached from a hot entry point"
    assert required["for_build_id"] == "aa11" and "lib" not in required and "jump_table" not in required
    assert required["changes"] == [{"function": "app::main", "change": "changed", "verdict": "needs-restart",
                                    "why": "no entry point's code calls `app::main`", "file": "app/src/main.rs",
                                    "line": 7, "new": True}]
    assert app.sent == [2]  # only the carried patch counts as what the program runs
    assert app.entries == [[HOT_ENTRY], [HOT_ENTRY]]  # the running processes' entry points, each build
    assert events[3]["verdict"] == "carried" and events[3]["changes"] == []


@pytest.mark.asyncio
async def test_an_unexpected_error_is_build_failed_and_the_session_keeps_serving(workspace: Workspace) -> None:
    async with serving(workspace) as (session, events):
        workspace.patchers["app"].fail = RuntimeError("boom")
        await save(session, workspace, "app/src/main.rs")
        await save(session, workspace, "app/src/main.rs")
    assert [e["type"] for e in schema_checked(events)] == [
        "build-started",
        "build-failed",
        "build-started",
        "patch-ready",
    ]
    assert events[1]["message"] == "internal error while building the patch: RuntimeError('boom')"
    assert events[1]["diagnostics"] == [] and events[3]["id"] == 2


# --------------------------------------------------------------------------- manifests


@pytest.mark.asyncio
async def test_a_manifest_change_is_full_rebuild_required_and_builds_nothing(workspace: Workspace) -> None:
    async with serving(workspace) as (session, events):
        await save(session, workspace, "core/Cargo.toml")
    assert schema_checked(events) == [
        {
            "type": "full-rebuild-required",
            "workspace": str(workspace.root),
            "reason": "Cargo.toml changed: a patch can't carry dependency, feature, build-script or proc-macro "
            "changes. Run `thinpatch capture` and restart the program.",
            "files": [str(workspace.path("core/Cargo.toml"))],
        }
    ]
    assert all(p.calls == [] for p in workspace.patchers.values())


@pytest.mark.asyncio
async def test_a_manifest_back_to_its_content_at_the_start_is_no_event(workspace: Workspace) -> None:
    manifest = workspace.path("Cargo.lock")
    original = manifest.read_text()
    async with serving(workspace) as (session, events):
        await save(session, workspace, "Cargo.lock")
        manifest.write_text(original)
        await workspace.watchers[0].report(manifest)
    assert [e["type"] for e in events] == ["full-rebuild-required"]  # the edit, not its undoing


# --------------------------------------------------------------------------- the session's start


@pytest.mark.asyncio
async def test_warm_up_builds_each_program_once_and_publishes_nothing(workspace: Workspace) -> None:
    async with serving(workspace, warm_up=True) as (session, events):
        pass
    assert events == []
    assert workspace.patchers["app"].calls == [[]] and workspace.patchers["tool"].calls == [[]]
    assert session.builds == 0 and session.last_outcome is None


@pytest.mark.asyncio
async def test_sources_saved_before_the_session_started_are_built_at_once(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", saved_before_session=(TOOL,))
    async with serving(ws, warm_up=True) as (_session, events):
        pass
    assert [(e["type"], e["program"]["name"]) for e in schema_checked(events)] == [
        ("build-started", "tool"),
        ("patch-ready", "tool"),
    ]
    assert ws.patchers["app"].calls == []  # no warm-up either: a real build came first


@pytest.mark.asyncio
async def test_a_rebuild_request_builds_without_a_save(workspace: Workspace) -> None:
    async with serving(workspace) as (session, events):
        session.rebuild({APP})
        assert session.scheduler is not None
        with anyio.fail_after(TIMEOUT_S):
            await session.scheduler.wait_idle()
    assert [e["type"] for e in schema_checked(events)] == ["build-started", "patch-ready"]
    assert events[0]["files"] == [] and events[0]["crate"] == "app"
    assert workspace.patchers["app"].calls == [[APP]] and workspace.patchers["tool"].calls == []


@pytest.mark.asyncio
async def test_status_counts_builds_and_shows_the_last_patch(workspace: Workspace) -> None:
    async with serving(workspace) as (session, _events):
        await save(session, workspace, "tool/src/main.rs")
        status = session.status()
    assert status["workspace"] == str(workspace.root) and status["builds"] == 1 and status["watching"]
    assert status["last_outcome"] == "patch-ready" and status["last_patch"]["lib"] == "/tmp/patches/tool-1.so"
    assert status["crates"] == ["app.bin", "core.lib", "extra.lib", "spare.lib", "tool.bin"]
    assert status["watched_files"] == len(workspace.watchers[0].files)


# --------------------------------------------------------------------------- patch results


def test_a_program_keeps_each_process_outcome_for_its_newest_patches(workspace: Workspace) -> None:
    program = workspace.program("app")
    served = ServedProgram(program, FakePatcher(program, workspace.loaded.scopes[SCOPE], workspace.root), {APP})
    served.last_patch = {"type": "patch-ready", "id": 40, "lib": "/tmp/p.so", "subscribers": 2}
    assert served.is_current(40) and not served.is_current(39)
    served.record_result(40, 101, PatchOutcome(applied=True, message=None))
    served.record_result(40, 102, PatchOutcome(applied=False, message="dlopen failed"))
    assert served.status()["last_patch"] == {
        "id": 40,
        "lib": "/tmp/p.so",
        "subscribers": 2,
        "applied": [101],
        "failed": [{"pid": 102, "message": "dlopen failed"}],
    }
    for patch_id in range(100, 140):
        served.record_result(patch_id, 101, PatchOutcome(applied=True, message=None))
    assert len(served.results) == 32 and 40 not in served.results and served.is_current(40)
