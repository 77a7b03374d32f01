"""Programs: the exact binaries a capture produced, and which running process is which.

A program is one captured binary: its workspace, its capture scope (target and profile,
``host-debug``), its bin crate, the file the linker wrote and that file's build ID. A
workspace can have several (every bin, each profile and target). Patches are built for one
program and only ever sent to processes whose binary has that program's build ID.

Everything here is pure (capture records, paths and build IDs in, data out) except
``read_programs`` at the bottom, which reads the capture store and the binaries.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from capture.store import Captures, CrateKey, list_scopes, load_captures, safe_name
from daemon.binary.build_id import read_build_id
from daemon.build.crate_graph import crate_node, dependency_graph
from daemon.socket.protocol import NotPatchableReason

RESTART_HINT = "Restart it with `thinpatch run`, or run the binary `thinpatch capture` built."


@dataclass(frozen=True)
class Program:
    workspace: str
    scope: str  # "<target or host>-<profile dir>", as the capture store names it
    crate: CrateKey  # the bin crate
    name: str  # the binary's name, e.g. "app"
    binary: str  # the file the captured link wrote
    build_id: str | None
    target: str | None = None  # the rustc target triple it was built for; None: not recorded

    @property
    def key(self) -> str:
        return f"{self.scope}/{self.crate.label}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.scope})"

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name, "scope": self.scope, "binary": self.binary, "build_id": self.build_id,
            "target": self.target,
        }


@dataclass(frozen=True)
class SkippedTop:
    crate: CrateKey
    reason: str


def programs_of(
    workspace: str, captures: Captures, build_ids: Mapping[str, str | None]
) -> tuple[list[Program], list[SkippedTop]]:
    """The patchable programs of one capture scope, and the top crates that are not.

    ``build_ids`` maps a binary path to its build ID (read by the caller). Only bin crates are
    programs: a cdylib or dylib has no `main`, so no jump table can be computed for it.
    """
    programs: list[Program] = []
    skipped: list[SkippedTop] = []
    for record in captures.top_crates():
        key = record.key
        if "bin" not in record.crate_types:
            skipped.append(
                SkippedTop(key, f"{record.crate_name} is a {'/'.join(record.crate_types)}, not a program: "
                           "patches load into binaries that have `main`")
            )
            continue
        link = captures.link_for(record.crate_name)
        if link is None:
            skipped.append(SkippedTop(key, f"no link line captured for {record.crate_name}"))
            continue
        name = (
            os.path.basename(link.output).rsplit("-", 1)[0]
            if "/deps/" in link.output
            else os.path.basename(link.output)
        )
        programs.append(
            Program(
                workspace=workspace,
                scope=captures.scope,
                crate=key,
                name=name,
                binary=link.output,
                build_id=build_ids.get(link.output),
                target=record.target,
            )
        )
    return sorted(programs, key=lambda p: (p.scope, p.name)), skipped


class ProgramChoiceError(LookupError):
    """No program, or several, match what the user asked for. ``str()`` says how to choose."""


def choose_program(
    programs: Iterable[Program],
    *,
    bin_name: str | None = None,
    profile: str | None = None,
    target: str | None = None,
) -> Program:
    """The one program matching ``--bin``, the profile's directory name (``debug``, ``release``,
    a custom profile) and ``--target``; an error naming the choices when that is not one."""
    every = list(programs)

    def fits(p: Program) -> bool:
        target_part, _, profile_part = p.scope.rpartition("-")
        return (
            (bin_name is None or p.name == bin_name or p.crate.name == bin_name.replace("-", "_"))
            and (profile is None or profile_part == profile)
            and (target is None or target_part == safe_name(target))
        )

    matching = [p for p in every if fits(p)]
    if len(matching) == 1:
        return matching[0]
    listed = ", ".join(p.label for p in every) or "none"
    if not matching:
        asked = [
            f"--bin {bin_name}" if bin_name else "",
            f"profile {profile}" if profile else "",
            f"--target {target}" if target else "",
        ]
        raise ProgramChoiceError(
            f"no captured program matches {' '.join(a for a in asked if a) or 'the request'}; captured: {listed}. "
            "Run `thinpatch capture` with the same --bin/--release/--profile/--target first."
        )
    names = {p.name for p in matching}
    how = "--bin NAME" if len(names) > 1 else "--release, --profile NAME or --target TRIPLE"
    raise ProgramChoiceError(
        f"several captured programs match: {', '.join(p.label for p in matching)}. Choose one with {how}."
    )


# --------------------------------------------------------------------------- crate membership


def program_crates(captures: Captures, top_key: CrateKey) -> set[CrateKey]:
    """Every crate the program's binary is built from (itself included)."""
    nodes = [crate_node(r) for r in captures.rustc.values() if r.kind != "build-script"]
    graph = dependency_graph(nodes)
    seen: set[CrateKey] = set()
    stack = [top_key]
    while stack:
        key = stack.pop()
        if key not in seen:
            seen.add(key)
            stack.extend(graph.get(key, ()))
    return seen


# --------------------------------------------------------------------------- subscribers


@dataclass(frozen=True)
class Identity:
    """Who a subscriber is: its program, or why it can't be patched."""

    program: Program | None
    build_id: str | None
    reason: NotPatchableReason | None = None  # set, with message, when program is None
    message: str | None = None


def identify(
    *,
    pid: int | None,
    build_id: str | None,
    executable: str | None,
    programs: Iterable[Program],
    retired: Mapping[str, Program],
) -> Identity:
    """Match a subscriber's binary to a served program (pure).

    ``retired`` maps the build IDs of earlier sessions' binaries (before a re-capture) to
    their programs, so an old process hears that it must restart instead of nothing at all.
    """
    every = list(programs)
    who = f"process {pid}" if pid is not None else "this subscriber"
    if build_id is None:
        return Identity(
            None,
            None,
            "unidentified",
            f"thinpatch could not read which binary {who} runs, so it sends it no patches. "
            "Subscribe with `build_id` (the binary's GNU build ID), or run it on Linux where the "
            "daemon reads /proc/PID/exe.",
        )
    for program in every:
        if program.build_id == build_id:
            return Identity(program, build_id)
    if build_id in retired:
        old = retired[build_id]
        return Identity(
            None,
            build_id,
            "old-session",
            f"{who} runs {old.label} from an earlier capture; patches are now built for the new binary. {RESTART_HINT}",
        )
    same_name = [p for p in every if executable and os.path.basename(executable) == p.name]
    if same_name:
        program = same_name[0]
        return Identity(
            None,
            build_id,
            "replaced",
            f"{who} runs {executable}, which is not the binary `thinpatch capture` built for "
            f"{program.label} (build ID {build_id[:12]}, captured {str(program.build_id)[:12]}): a plain "
            "`cargo build` probably replaced it. Patches would not load into it. "
            f"{RESTART_HINT}",
        )
    what = executable or f"a binary with build ID {build_id[:12]}"
    captured = ", ".join(p.label for p in every) or "none"
    return Identity(
        None,
        build_id,
        "not-captured",
        f"{who} runs {what}, which thinpatch did not capture (captured programs: {captured}). "
        "Run `thinpatch capture` for it, then restart it.",
    )


# --------------------------------------------------------------------------- reading (effects)


def read_programs(
    workspace: str, capture_root: os.PathLike[str] | str
) -> tuple[list[Program], list[SkippedTop], dict[str, Captures]]:
    """Every program of every capture scope under ``capture_root``, with build IDs read from
    the binaries; the top crates that are not programs; and each scope's captures."""
    programs: list[Program] = []
    skipped: list[SkippedTop] = []
    by_scope: dict[str, Captures] = {}
    root = Path(capture_root)
    for scope in list_scopes(root):
        captures = load_captures(root, scope)
        if not captures.rustc:
            continue
        by_scope[scope] = captures
        outputs = [link.output for link in captures.links.values()]
        build_ids = {out: read_build_id(out) for out in outputs if os.path.exists(out)}
        found, skip = programs_of(workspace, captures, build_ids)
        for program in found:
            if program.binary in build_ids:
                programs.append(program)
            else:
                skip.append(SkippedTop(program.crate, f"the captured binary {program.binary} no longer exists"))
        skipped.extend(skip)
    return programs, skipped, by_scope
