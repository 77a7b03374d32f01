"""``thinpatch-rustc``: cargo's rustc wrapper. Records each workspace crate's rustc invocation.

Cargo runs it as ``thinpatch-rustc <real rustc> <args…>``, either as
``RUSTC_WORKSPACE_WRAPPER`` (workspace members only) or as ``RUSTC_WRAPPER`` (every crate;
crates from outside the workspace are then skipped). For each real compilation it writes one
record (a ``capture.store.CaptureRecord``, made by ``plan_invocation``), then replaces itself
with the real rustc (exec), so rustc's stdin, stdout, stderr, exit status and signals are
exactly its own. The shim writes nothing to stdout (cargo parses rustc's stdout as JSON);
failures to record go to the capture log and the build goes on.

For the top crate (bin/cdylib/dylib), ``capture.fatbuild`` adds the arguments that let patches
load into the artifact and routes the link through ``thinpatch-linker``.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from capture.rustc_args import RustcArgs
    from capture.store import CaptureRecord

SHIM_NAME = "thinpatch-rustc"
SHIM_VERSION = 1

_REGISTRY_DIRS = ("/usr/share/cargo/registry",)


class Skip(Exception):
    """This invocation is not recorded. ``expected`` skips (probes, registry crates) are not logged."""

    def __init__(self, reason: str, expected: bool = True):
        super().__init__(reason)
        self.expected = expected


def recorded_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment to record: ``capture.environment`` says what is dropped and why."""
    from capture.environment import replayable_env

    return replayable_env(env)


def wrapper_mode(env: Mapping[str, str]) -> str:
    """``workspace`` when cargo named us through RUSTC_WORKSPACE_WRAPPER, else ``all``."""
    if os.path.basename(env.get("RUSTC_WORKSPACE_WRAPPER", "")) == SHIM_NAME:
        return "workspace"
    return "all"


def find_target_dir(out_dir: str) -> str | None:
    """The cargo target dir above ``out_dir``: the first ancestor holding ``CACHEDIR.TAG``."""
    path = os.path.abspath(out_dir)
    while True:
        if os.path.isfile(os.path.join(path, "CACHEDIR.TAG")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def profile_from_out_dir(out_dir: str, target_dir: str, target: str | None) -> str:
    """``debug``/``release``/custom: the first dir under the target dir (after the triple)."""
    rel = os.path.relpath(os.path.abspath(out_dir), target_dir).split(os.sep)
    if target and rel and rel[0] == target:
        rel = rel[1:]
    if not rel or rel[0] in (".", ".."):
        return "unknown"
    return rel[0]


def _inside(path: str, root: str | None) -> bool:
    if not root:
        return False
    root = os.path.abspath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def outside_workspace_reason(
    src: str, workspace: str, target_dir: str | None, rustc: str, env: Mapping[str, str]
) -> str | None:
    """Why a crate is not the user's own code (RUSTC_WRAPPER mode), or None when it is."""
    if not _inside(src, workspace):
        return "outside the workspace"
    if _inside(src, target_dir):
        return "inside the target dir"
    if "vendor" in os.path.relpath(src, workspace).split(os.sep):
        return "vendored"
    cargo_home = env.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")
    if _inside(src, cargo_home):
        return "inside CARGO_HOME"
    if any(_inside(src, d) for d in _REGISTRY_DIRS):
        return "inside a system registry"
    real = os.path.realpath(rustc) if os.sep in rustc else None
    if real and _inside(src, os.path.dirname(os.path.dirname(real))):
        return "inside the sysroot"
    return None


def find_linker_shim() -> str:
    """Absolute path of thinpatch-linker: next to this script, next to Python, or on PATH."""
    name = "thinpatch-linker"
    for base in (os.path.dirname(os.path.abspath(sys.argv[0])), os.path.dirname(sys.executable)):
        candidate = os.path.join(base, name)
        if os.access(candidate, os.X_OK):
            return candidate
    import shutil

    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    raise Skip(f"{name} not found next to {sys.argv[0]} or on PATH", expected=False)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def parse_invocation(args: list[str]) -> RustcArgs:
    """rustc's arguments as cargo gave them, argument files (``@path``) read in."""
    from capture.rustc_args import expand_rustc_argfiles, parse_rustc_args

    expanded = expand_rustc_argfiles(args, _read_text) if any(a.startswith("@") for a in args) else args
    return parse_rustc_args(expanded)


def plan_invocation(
    rustc: str, args: list[str], env: Mapping[str, str], cwd: str, parsed: RustcArgs | None = None
) -> tuple[CaptureRecord, Path, list[str], dict[str, str]]:
    """Decide what to record and what rustc runs with. Returns (record, record_path, run_args, child_env).
    ``parsed``: :func:`parse_invocation` of ``args``, when the caller has it already.

    Raises Skip for invocations that are not recorded.
    """
    if parsed is None:
        parsed = parse_invocation(args)
    if parsed.is_probe:
        raise Skip("probe")
    if parsed.test:
        raise Skip("test harness")
    if parsed.emit and "link" not in parsed.emit and "obj" not in parsed.emit:
        raise Skip("metadata-only (check) build")
    if not parsed.crate_name:
        raise Skip("no crate name")

    from pathlib import Path

    from capture import store

    out_dir = os.path.abspath(os.path.join(cwd, parsed.out_dir)) if parsed.out_dir else None
    target_dir = find_target_dir(out_dir) if out_dir else None
    root = env.get(store.ENV_CAPTURE_ROOT)
    if not root:
        if not target_dir:
            raise Skip(f"no capture root: set {store.ENV_CAPTURE_ROOT} or build in a cargo target dir", expected=False)
        root = os.path.join(target_dir, store.CAPTURE_DIRNAME)
    if target_dir is None:
        target_dir = os.path.dirname(os.path.abspath(root))
    workspace = env.get(store.ENV_WORKSPACE) or os.path.dirname(target_dir)
    assert parsed.source is not None  # no crate root makes a probe, skipped above
    src = os.path.normpath(os.path.join(cwd, parsed.source))
    mode = wrapper_mode(env)
    if mode == "all":
        reason = outside_workspace_reason(src, workspace, target_dir, rustc, env)
        if reason:
            raise Skip(reason)

    profile = profile_from_out_dir(out_dir, target_dir, parsed.target) if out_dir else "unknown"
    scope = store.scope_name(parsed.target, profile)
    package = env.get("CARGO_PKG_NAME")
    run_args, shim_args, child_env, linker_chain = list(args), [], {}, None
    from capture import fatbuild

    if fatbuild.is_top_crate(parsed):
        plan = fatbuild.plan_fat_build(
            parsed,
            args,
            env,
            linker_shim=find_linker_shim(),
            host_triple=env.get(store.ENV_HOST_TRIPLE),
            platform=sys.platform,
            capture_root=root,
            scope=scope,
            # THINPATCH_FAT_LINK in cargo's environment overrides the default link edits.
            link_edits=(
                fatbuild.parse_link_edits(env[fatbuild.ENV_FAT_LINK])
                if fatbuild.ENV_FAT_LINK in env
                else fatbuild.DEFAULT_LINK_EDITS
            ),
        )
        if plan is not None:
            run_args, shim_args, child_env = plan.run_args, plan.shim_args, plan.child_env
            linker_chain = store.LinkerChain(
                shim=plan.linker_shim,
                chained=plan.chained_linker,
                source=plan.linker_source,
                replaced_arg=plan.replaced_linker_arg,
                link_edits=tuple(plan.link_edits),
            )

    if parsed.emit_paths.get("dep-info"):
        dep_info = os.path.normpath(os.path.join(cwd, parsed.emit_paths["dep-info"]))
    elif out_dir:
        dep_info = os.path.join(out_dir, f"{parsed.crate_name}{parsed.extra_filename}.d")
    else:
        dep_info = None

    import time

    record = store.CaptureRecord(
        crate_name=parsed.crate_name,
        kind=parsed.kind,
        crate_types=tuple(parsed.crate_types),
        rustc=rustc,
        args=tuple(run_args),
        cwd=cwd,
        env=recorded_env(env),
        recorded_at=time.time(),
        package=package,
        cargo_args=tuple(args),
        shim_args=tuple(shim_args),
        manifest_dir=env.get("CARGO_MANIFEST_DIR"),
        src=src,
        target=parsed.target or env.get(store.ENV_HOST_TRIPLE) or None,
        profile=profile,
        scope=scope,
        out_dir=out_dir,
        extra_filename=parsed.extra_filename,
        dep_info=dep_info,
        workspace=workspace,
        is_top=linker_chain is not None,
        linker_chain=linker_chain,
        wrapper_mode=mode,
        shim_version=SHIM_VERSION,
        cargo_configs=store.configs_from_env(env),
    )
    return record, store.rustc_record_path(Path(root), scope, record.key), run_args, child_env


def _log(root: str | None, message: str) -> None:
    try:
        from pathlib import Path

        from capture import store

        store.log_warning(Path(root) if root else None, f"thinpatch-rustc: {message}")
    except Exception:
        pass


def _exec(rustc: str, args: list[str], env: Mapping[str, str]) -> None:
    argv = [rustc, *args]
    try:
        if os.sep in rustc:
            os.execve(rustc, argv, env)
        os.execvpe(rustc, argv, env)
    except OSError as exc:
        sys.stderr.write(f"thinpatch-rustc: cannot run {rustc!r}: {exc}\n")
        sys.exit(127)


def hold_at_gate(gate: str, parsed: RustcArgs | None) -> None:
    """A held build (see capture.build_gate): a compile waits for the decision, and exits
    without running rustc when the build was called off. Only cargo's probes pass at once
    (arguments that can't be read count as a compile)."""
    from capture import build_gate

    if (parsed is None or not parsed.is_probe) and not build_gate.wait_at_gate(gate):
        sys.stderr.write("thinpatch-rustc: this build was called off (a patch carries the save)\n")
        sys.exit(build_gate.CALLED_OFF_EXIT)
    build_gate.close_gate(gate)


def main() -> None:
    argv = sys.argv[1:]
    # Both wrapper variables naming us make cargo pass us our own path: skip to the real rustc.
    while argv and os.path.basename(argv[0]) == SHIM_NAME:
        argv = argv[1:]
    if not argv:
        sys.stderr.write(f"usage: {SHIM_NAME} <rustc> <args…>  (set as RUSTC_WORKSPACE_WRAPPER or RUSTC_WRAPPER)\n")
        sys.exit(2)
    rustc, args = argv[0], argv[1:]
    env = os.environ
    try:
        parsed: RustcArgs | None = parse_invocation(args)
    except Exception:  # said below, where planning fails on it again
        parsed = None
    gate = env.get("THINPATCH_BUILD_GATE")  # capture.build_gate.ENV_GATE: imported only when held
    if gate is not None:
        hold_at_gate(gate, parsed)
    run_args: list[str] = args
    run_env: Mapping[str, str] = env
    try:
        record, path, planned_args, child_env = plan_invocation(rustc, args, env, os.getcwd(), parsed)
    except Skip as skip:
        if not skip.expected:
            _log(env.get("THINPATCH_CAPTURE_ROOT"), f"not recording: {skip}")
    except Exception as exc:
        _log(env.get("THINPATCH_CAPTURE_ROOT"), f"could not plan {args[:4]!r}: {type(exc).__name__}: {exc}")
    else:
        run_args = planned_args
        if child_env:
            run_env = {**env, **child_env}
        root = path.parents[3]  # <root>/captures/<scope>/rustc/<key>.json
        try:
            from capture import store

            # never through a link: walked down from cargo's target dir
            store.write_json_atomic(path, record.to_json(), within=store.capture_base(root))
        except Exception as exc:  # recording must never break the build: rustc runs all the same
            _log(str(root), f"could not record {record.crate_name}: {type(exc).__name__}: {exc}")
    _exec(rustc, run_args, run_env)


if __name__ == "__main__":
    main()
