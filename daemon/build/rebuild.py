"""Build a patch library from the captures: run rustc for each crate, pipelined, then the linker.

Takes ``capture.store.Captures``, the keys of the crates that changed and a session
directory. Gives a ``PatchBuild``: the new library's path and number, each rebuilt crate's
objects, warnings and rustc time (``CrateBuild``), and the link's time and command.

What to run comes from the pure planners (``crate_plans``, ``rustc_plan``, ``link_plan``);
this module runs them: each tool through ``processes.run_tool`` (a build superseded by a
newer edit is cancelled, and its children killed), a crate's objects kept and reused with
``crate_objects``, one build at a time per session (``concurrency.exclusive_build``).
Failures raise the classes of ``errors``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from capture.store import Captures, CrateKey
from daemon.build.concurrency import beside, exclusive_build
from daemon.build.crate_objects import (
    forget_outputs,
    record_objects,
    remove_stale_objects,
    reusable_objects,
    written_objects,
)
from daemon.build.crate_plans import plan_crates, resolve_crate, resolve_link, resolve_top
from daemon.build.diagnostics import Diagnostic, absolutize, artifact_notice, parse_stream
from daemon.build.errors import (
    RECAPTURE_HINT,
    CompileError,
    LinkError,
    MissingCapture,
    ToolKilled,
    UnsupportedEdit,
    UntrustedTool,
    writing_session,
)
from daemon.build.link_plan import DependencyArchives, LinkPlan, LinkPlanError, build_link_plan
from daemon.build.processes import ToolRun, run_tool
from daemon.build.refusals import lto_refusal, strip_refusal
from daemon.build.replay_trust import DiskProbe, replay_refusals
from daemon.build.rustc_plan import ObjPlan, PlanError, extern_paths, replay_env
from daemon.build.session_cache import (
    SessionLayout,
    open_session,
    reserve_patch_number,
    session_tag,
)

# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CrateBuild:
    key: CrateKey
    objects: tuple[Path, ...]  # one per codegen unit, sorted
    rustc_ms: float
    warnings: tuple[Diagnostic, ...] = ()
    reused: bool = False  # the objects of an earlier patch build, its sources unchanged since
    started_at: float = 0.0  # time.perf_counter() around rustc: crates of one build overlap
    finished_at: float = 0.0


@dataclass(frozen=True)
class PatchBuild:
    library: Path
    patch_number: int
    program: CrateKey  # the program's crate (the one the library patches)
    edited: tuple[CrateKey, ...]  # the crates saved for this patch
    objects: tuple[Path, ...]
    crates: tuple[CrateBuild, ...]
    rustc_ms: float
    link_ms: float
    link_argv: tuple[str, ...] = field(repr=False, default=())

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(w for c in self.crates for w in c.warnings)


# --------------------------------------------------------------------------- the build


def _check_inputs_exist(plan: ObjPlan) -> None:
    """Dependencies named by ``--extern`` must still exist (``cargo clean`` removes them)."""
    for name, path in extern_paths(plan.args).items():
        full = path if os.path.isabs(path) else os.path.join(plan.cwd, path)
        if not os.path.exists(full):
            raise MissingCapture(
                f"crate {plan.crate_name} was built against {name} at {full}, which no longer exists "
                f"(was `cargo clean` run?). {RECAPTURE_HINT}"
            )


async def compile_crate(
    plan: ObjPlan, session_root: Path | None = None, metadata_written: anyio.Event | None = None
) -> CrateBuild:
    """Compile one crate. ``metadata_written`` is set as soon as rustc announces the crate's
    ``.rmeta`` (before its code generation), so dependents can start compiling. The crate's
    objects are the ones rustc announces (one per codegen unit)."""
    _check_inputs_exist(plan)
    forget_outputs(plan, session_root)
    announced: list[Path] = []

    def notice(line: bytes) -> None:
        found = artifact_notice(line)
        if found is None:
            return
        kind, path = found
        if kind == "obj":
            announced.append(Path(plan.cwd, path))
        elif metadata_written is not None and (kind, path) == ("metadata", str(plan.metadata_path)):
            metadata_written.set()

    # rustc names each build's objects anew: those not here yet are this run's, should a rustc
    # announce none
    earlier = {e.name for e in os.scandir(plan.obj_dir)}
    started_at = time.perf_counter()
    run = await run_tool(plan.argv, cwd=plan.cwd, env=plan.env, tool="rustc", on_stderr_line=notice)
    if run.returncode < 0:
        raise ToolKilled("rustc", -run.returncode, plan.crate_name)
    stream = parse_stream(run.stderr)
    stream = replace(stream, diagnostics=tuple(absolutize(d, plan.cwd) for d in stream.diagnostics))
    objects: tuple[Path, ...] = ()
    if run.returncode == 0:
        objects = tuple(sorted(announced)) or written_objects(plan.obj_dir, earlier)
    if run.returncode != 0 or not objects:
        raise CompileError(plan.crate_name, stream, plan.argv, run.returncode)
    record_objects(plan, objects, session_root)
    return CrateBuild(
        key=plan.key,
        objects=objects,
        rustc_ms=run.elapsed_ms,
        warnings=stream.warnings,
        started_at=started_at,
        finished_at=time.perf_counter(),
    )


async def link_patch(plan: LinkPlan, final_path: Path, env: Mapping[str, str], crate: str = "?") -> ToolRun:
    """Link into a temporary name, then rename, so a library path only ever names a whole file."""
    try:
        run = await run_tool(plan.argv, cwd=plan.cwd, env=env, tool="linker")
        if run.returncode < 0:
            raise ToolKilled("the linker", -run.returncode, crate)
        if run.returncode != 0 or not plan.output.exists():
            raise LinkError(run.stderr or run.stdout, plan.argv, run.returncode)
        os.replace(plan.output, final_path)
    except BaseException:
        # a failed or cancelled link leaves nothing behind in the patches dir
        try:
            plan.output.unlink()
        except FileNotFoundError:
            pass
        raise
    return run


def _reads_rebuilt_metadata(plan: ObjPlan, rebuilt: set[str]) -> bool:
    return any(path in rebuilt for path in extern_paths(plan.args).values())


async def _compile_pipelined(
    plans: Sequence[ObjPlan], reuse: Collection[CrateKey], session_root: Path
) -> list[CrateBuild]:
    """Compile the plans (dependencies first), each starting as soon as every crate before it
    has written its metadata, as cargo pipelines: a dependent's front end overlaps the code
    generation of the crates it uses. Crates in ``reuse`` whose inputs did not change keep
    their earlier objects. The first failure, in plan order, is raised; the rest are stopped.
    """
    results: list[CrateBuild | None] = [None] * len(plans)
    to_compile: list[int] = []
    recompiled_metadata: set[str] = set()
    for i, plan in enumerate(plans):
        if plan.key in reuse and not _reads_rebuilt_metadata(plan, recompiled_metadata):
            earlier = reusable_objects(plan)
            if earlier:
                results[i] = CrateBuild(plan.key, earlier, 0.0, reused=True)
                continue
        to_compile.append(i)
        if plan.metadata_path is not None:
            recompiled_metadata.add(str(plan.metadata_path))

    # Every earlier crate, not only direct dependencies: rustc also reads the metadata of
    # crates reached through others.
    metadata_ready = [anyio.Event() for _ in plans]
    for i, result in enumerate(results):
        if result is not None or plans[i].metadata_path is None:
            metadata_ready[i].set()
    failures: dict[int, Exception] = {}

    async def build(i: int, group: TaskGroup) -> None:
        for earlier in range(i):
            await metadata_ready[earlier].wait()
        try:
            results[i] = await compile_crate(plans[i], session_root, metadata_ready[i])
        except Exception as exc:
            failures[i] = exc
            group.cancel_scope.cancel()
        finally:
            metadata_ready[i].set()  # done without a notice: release the waiters now

    async with anyio.create_task_group() as group:
        for i in to_compile:
            group.start_soon(build, i, group)
    if failures:
        raise failures[min(failures)]
    return [r for r in results if r is not None]


async def build_patch(
    captures: Captures,
    edited_keys: Sequence[CrateKey],
    session: SessionLayout | str | Path,
    *,
    top: CrateKey | None = None,
    rendered_ansi: bool = False,
    dependency_archives: DependencyArchives = "drop",
    os_name: str | None = None,
    reuse: Collection[CrateKey] = (),
    while_linking: Callable[[tuple[CrateBuild, ...]], object] | None = None,
) -> PatchBuild:
    """Rebuild the edited crates (default: the program's own crate) and every workspace
    crate between them and the program, then link their objects into a new patch library.

    ``reuse``: crate keys whose sources are unchanged since this session last compiled them;
    their objects are linked again without recompiling, unless a crate they read was
    recompiled in this build. ``while_linking(crates)`` runs in a worker thread while the
    linker runs (work on the compiled objects that needn't wait for the library); it must not
    raise.

    Raises MissingCapture, UntrustedTool, ToolNotFound, ToolKilled, SessionCacheError, CompileError or
    LinkError.
    """
    session_root = session.root if isinstance(session, SessionLayout) else Path(session)
    with writing_session(session_root):
        layout = open_session(session_root)
    top_record = resolve_top(captures, top)
    edited = [resolve_crate(captures, key) for key in edited_keys] or [top_record]
    refusal = lto_refusal(top_record.args) or strip_refusal(top_record.args)
    if refusal:
        raise UnsupportedEdit(refusal)
    link_record = resolve_link(captures, top_record)
    try:
        plans = plan_crates(captures, edited, top_record, layout.root, rendered_ansi=rendered_ansi)
    except PlanError as exc:
        raise UnsupportedEdit(str(exc)) from exc

    # Every program this build runs, checked again now: a capture's tools may have changed hands since.
    records = (top_record, *edited, *(captures.rustc.get(plan.key) for plan in plans))
    replayed = list({r.key: r for r in records if r is not None}.values())
    refusals = await anyio.to_thread.run_sync(replay_refusals, replayed, link_record, DiskProbe())
    if refusals:
        raise UntrustedTool("\n".join(refusals))

    # One build at a time per session: a daemon and a one-shot `thinpatch patch` may share it,
    # and two rustc runs must not write one crate's object directory at once.
    async with exclusive_build(layout):
        started = time.perf_counter()
        crates = await _compile_pipelined(plans, reuse, layout.root)
        rustc_ms = (time.perf_counter() - started) * 1000.0

        objects = [o for c in crates for o in c.objects]
        with writing_session(layout.root):
            number = reserve_patch_number(layout)
            tag = session_tag(layout)
        final_path = layout.patch_library_path(top_record.crate_name, number, os_name, tag)
        temp_path = final_path.with_name(f".{final_path.name}.{os.getpid()}.tmp")
        try:
            link_plan = build_link_plan(
                link_record, objects, temp_path, os_name, dependency_archives=dependency_archives
            )
        except LinkPlanError as exc:
            raise MissingCapture(f"{exc}. {RECAPTURE_HINT}") from exc
        if link_plan.cwd is None or not os.path.isdir(link_plan.cwd):
            link_plan = replace(link_plan, cwd=top_record.cwd)
        compiled = tuple(crates)

        def tidy_and_more() -> None:
            # the caller's work first: a verdict that stops the link is wanted as early as it can be
            try:
                if while_linking is not None:
                    while_linking(compiled)
            finally:
                remove_stale_objects([c.objects for c in compiled if not c.reused])  # none of them is linked

        try:
            link_run = await beside(
                tidy_and_more,
                lambda: link_patch(link_plan, final_path, replay_env(top_record.env), top_record.crate_name),
            )
        except BaseException:  # cancelled after the rename: the library is no one's
            with contextlib.suppress(OSError):
                final_path.unlink(missing_ok=True)
            raise
    return PatchBuild(
        library=final_path,
        patch_number=number,
        program=top_record.key,
        edited=tuple(dict.fromkeys(r.key for r in edited)),
        objects=tuple(objects),
        crates=tuple(crates),
        rustc_ms=rustc_ms,
        link_ms=link_run.elapsed_ms,
        link_argv=tuple(link_plan.argv),
    )
