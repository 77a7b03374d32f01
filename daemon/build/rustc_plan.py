"""Turn one captured rustc invocation into the invocation that builds a patch object.

Pure functions only: argument lists in, argument lists out. ``build_obj_plan`` takes a
``capture.store.CaptureRecord`` and a session directory and gives an ``ObjPlan``: the
program, arguments, directory and environment of the rustc run, and where its objects,
metadata and dep-info will land.

The editors work by fold-and-add: they remove every existing spelling of an option
(separated ``--emit X``, joined ``--emit=X``, repeated occurrences, comma lists) and then
append exactly one fresh occurrence, so applying an editor twice gives the same list as
applying it once. Every other argument stays verbatim and in order: ``-C metadata`` and
``-C extra-filename`` feed the symbol hashes, and ``--cfg``/``--extern``/``-L`` decide what
the code means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from capture.environment import replayable_env
from capture.rustc_args import (
    codegen_setting,
    codegen_value,
    option_values,
    parse_rustc_args,
    remove_codegen_option,
    remove_options,
    replace_options,
    spelled_like,
    split_extern,
)
from capture.store import CaptureRecord, CrateKey
from daemon.build.session_cache import SessionLayout


class PlanError(ValueError):
    """A captured invocation that cannot be turned into a patch build."""


# --------------------------------------------------------------------------- editors
#
# rustc's option syntax (every spelling of an option, which argument is whose value) is known
# only to capture.rustc_args; the editors below say what to change, not how to find it.


def set_crate_type(args: Sequence[str], kind: str) -> list[str]:
    return [*remove_options(args, "--crate-type"), "--crate-type", kind]


def set_emit(args: Sequence[str], emits: Mapping[str, str | Path | None]) -> list[str]:
    """Replace every ``--emit`` with one comma list, e.g. ``--emit=obj=P,metadata=M``."""
    if not emits:
        raise ValueError("set_emit needs at least one output kind")
    parts = [kind if path is None else f"{kind}={path}" for kind, path in emits.items()]
    return [*remove_options(args, "--emit"), "--emit=" + ",".join(parts)]


def set_emit_obj(args: Sequence[str], path: str | Path) -> list[str]:
    return set_emit(args, {"obj": path})


def set_out_dir(args: Sequence[str], directory: str | Path) -> list[str]:
    """Replace every ``--out-dir`` and drop ``-o``: rustc's outputs land in ``directory``."""
    return [*remove_options(args, "--out-dir", "-o"), "--out-dir", str(directory)]


def set_incremental(args: Sequence[str], directory: str | Path) -> list[str]:
    return [*remove_codegen_option(args, "incremental"), "-C", f"incremental={directory}"]


def set_codegen_units(args: Sequence[str], units: int | str) -> list[str]:
    return [*remove_codegen_option(args, "codegen-units"), "-C", f"codegen-units={units}"]


# Cargo passes no ``-C codegen-units`` unless the profile sets it; rustc then uses 256 units
# for incremental builds and 16 otherwise.
INCREMENTAL_CODEGEN_UNITS = 256
NON_INCREMENTAL_CODEGEN_UNITS = 16


def patch_codegen_units(captured_args: Sequence[str]) -> str:
    """The unit count of the captured build, spelled out.

    ``--emit=obj`` without an explicit count makes rustc compile the crate as ONE unit, so
    incremental compilation can reuse nothing and every save recompiles the whole crate.
    """
    units = codegen_value(captured_args, "codegen-units")
    if units:
        return units
    if codegen_value(captured_args, "incremental") is not None:
        return str(INCREMENTAL_CODEGEN_UNITS)
    return str(NON_INCREMENTAL_CODEGEN_UNITS)


def debuginfo_level(args: Sequence[str]) -> str | None:
    """The debug info rustc would use: the last ``-C debuginfo=…`` or ``-g`` (= full) wins."""
    level: str | None = None
    for option in parse_rustc_args(args).options:
        setting = codegen_setting(option)
        if option.name == "-g":
            level = "2"
        elif setting is not None and setting[0] == "debuginfo":
            level = setting[1]
    return level


def set_json_diagnostics(args: Sequence[str], rendered_ansi: bool = False, artifacts: bool = False) -> list[str]:
    """Diagnostics as JSON lines, each carrying rendered text (with ANSI colours if asked).

    Drops cargo's own ``--json`` choices (``future-incompat`` notices are no use to a patch).
    ``artifacts`` asks rustc to announce each file as it is written: the ``.rmeta`` comes
    before code generation, so dependents can start while this crate is still generating code.
    """
    out = [*remove_options(args, "--error-format", "--json"), "--error-format=json"]
    kinds = (["diagnostic-rendered-ansi"] if rendered_ansi else []) + (["artifacts"] if artifacts else [])
    if kinds:
        out.append("--json=" + ",".join(kinds))
    return out


def extern_paths(args: Sequence[str]) -> dict[str, str]:
    """``--extern name=path`` entries as {name: path} (entries without a path are skipped)."""
    result: dict[str, str] = {}
    for value in option_values(args, "--extern"):
        _, name, path = split_extern(value)
        if path is not None:
            result[name] = path
    return result


def set_extern(args: Sequence[str], crate: str, path: str | Path) -> list[str]:
    """Point ``--extern crate=…`` at ``path``, in place and spelled as it was (so order is
    kept, and modifiers such as ``noprelude:``); later entries for ``crate`` are dropped.
    Appended if absent."""
    entries = [
        (option, split_extern(option.value))
        for option in parse_rustc_args(args).options
        if option.name == "--extern" and option.value is not None
    ]
    matches = [(option, prefix) for option, (prefix, name, _) in entries if name == crate]
    if not matches:
        return [*args, "--extern", f"{crate}={path}"]
    first, prefix = matches[0]
    return replace_options(args, [o for o, _ in matches], spelled_like(first, f"{prefix}{crate}={path}"))


def add_search_dir(args: Sequence[str], kind: str, directory: str | Path) -> list[str]:
    """Append ``-L kind=dir`` unless that exact search path is already there."""
    spec = f"{kind}={directory}"
    return list(args) if spec in option_values(args, "-L") else [*args, "-L", spec]


def replay_env(env: Mapping[str, str]) -> dict[str, str]:
    """The captured environment minus what belonged to cargo's process tree (the shim's rule,
    applied again: see ``capture.environment``)."""
    return replayable_env(env)


# --------------------------------------------------------------------------- plans


def patch_crate_type(crate_types: Iterable[str]) -> str:
    """``bin`` keeps a bin crate's symbol hashes; every library type gives the same hashes
    as ``rlib``, and ``rlib`` keeps ``pub fn`` symbols global.

    Legacy-mangled hashes depend on whether the crate is an executable: a bin crate
    recompiled as ``rlib`` gets a new hash on every function, so no patch symbol would match
    the running program; ``cdylib`` and ``staticlib`` make ``pub fn`` symbols local.
    Checked with ``nm`` on rustc 1.95's output."""
    types = list(crate_types)
    if "proc-macro" in types:
        raise PlanError(
            "a proc-macro crate cannot be hot-patched: its code runs inside the compiler. "
            "Rebuild with `cargo build` and restart the program."
        )
    return "bin" if "bin" in types else "rlib"


@dataclass(frozen=True)
class ObjPlan:
    """How to run rustc for one crate of a patch."""

    key: CrateKey
    program: str
    args: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = field(repr=False)
    obj_dir: Path  # holds only this crate's objects, one per codegen unit: link all of them
    incremental_dir: Path
    metadata_path: Path | None = None  # set for library crates whose dependents are rebuilt too
    depinfo_path: Path | None = None  # the files rustc read (new modules, include_str! inputs)

    @property
    def crate_name(self) -> str:
        return self.key.name

    @property
    def argv(self) -> list[str]:
        return [self.program, *self.args]


def build_obj_plan(
    captured: CaptureRecord,
    session_dir: str | Path,
    *,
    emit_metadata: bool = False,
    extern_overrides: Mapping[str, str | Path] | None = None,
    rendered_ansi: bool = False,
) -> ObjPlan:
    """The rustc invocation that compiles ``captured`` into objects in the session.

    The objects (one per codegen unit, with the captured unit count) land in a directory of
    their own; the incremental directory is the same for every patch of the crate, so each
    save recompiles only the units it touched.

    ``emit_metadata`` also writes the crate's ``.rmeta`` into the session's deps dir, for
    rebuilt dependents; ``extern_overrides`` points ``--extern`` entries at such rebuilt
    metadata, and adds the session's deps dir to the search path so crates that reach a
    rebuilt crate only transitively find the new one too.
    """
    layout = SessionLayout(Path(session_dir))
    crate, kind = captured.crate_name, captured.kind
    args = list(captured.args)
    if not args:
        raise PlanError(f"the capture of crate {crate!r} has no rustc arguments")

    obj_dir = layout.object_dir(crate, kind)
    incremental_dir = layout.incremental_dir(crate, kind)
    depinfo_path = layout.depinfo_path(crate, kind)
    units = patch_codegen_units(args)
    emits: dict[str, str | Path | None] = {"dep-info": depinfo_path, "obj": None}
    metadata_path = None
    if emit_metadata:
        extra = codegen_value(args, "extra-filename") or ""
        metadata_path = layout.metadata_path(crate, extra)
        emits["metadata"] = metadata_path

    args = set_crate_type(args, patch_crate_type(captured.crate_types))
    args = set_emit(args, emits)
    args = set_out_dir(args, obj_dir)
    args = set_incremental(args, incremental_dir)
    args = set_codegen_units(args, units)
    # artifact notices name each object rustc writes (and the .rmeta before code generation)
    args = set_json_diagnostics(args, rendered_ansi=rendered_ansi, artifacts=True)
    if extern_overrides:
        for name, path in extern_overrides.items():
            args = set_extern(args, name, path)
        args = add_search_dir(args, "dependency", layout.deps_dir)

    return ObjPlan(
        key=captured.key,
        program=captured.rustc,
        args=tuple(args),
        cwd=captured.cwd,
        env=replay_env(captured.env),
        obj_dir=obj_dir,
        incremental_dir=incremental_dir,
        metadata_path=metadata_path,
        depinfo_path=depinfo_path,
    )
