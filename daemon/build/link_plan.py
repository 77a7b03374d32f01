"""Turn the captured link line of the running program into the link line of a patch library.

Pure functions only. ``build_link_plan`` takes a ``capture.store.LinkRecord``, the patch's
objects and an output path, and gives a ``LinkPlan`` (the linker's argv and directory).

The captured line already has what the platform needs (the driver, ``-B…``/``-fuse-ld=lld``
for rust-lld, target flags, native ``-l`` libraries, search paths); the plan removes what
makes an executable (objects, ``-o``, ``-pie``, symbol-visibility lists, section garbage
collection) and adds what makes a patch library: ``-shared``, a directive that binds the
patch's calls to its own functions, one that leaves undefined symbols to be resolved against
the running program when the library is loaded, the new objects and the output path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from capture.store import LinkRecord
from daemon.build.session_cache import OS_LINUX, OS_MACOS, host_os, normalize_os

DependencyArchives = Literal["drop", "keep"]

UNRESOLVED_DIRECTIVE = {
    OS_LINUX: ["-Wl,--unresolved-symbols=ignore-all"],
    OS_MACOS: ["-Wl,-undefined,dynamic_lookup"],
}

# The patch's calls to its own functions must reach its own new code. Hot-patch runtimes
# look up only the hot entry point; every call made inside the patch is an ordinary call,
# and the running program exports its old copies (--export-dynamic), which would win.
# ELF: -Bsymbolic-functions binds defined functions inside the library, never data, so a
# library `pub static` keeps binding to the program's copy.
# Mach-O: two-level namespace (ld64's default, restated in case the captured line chose
# flat, which would bind the patch's calls to the program's old copies) binds the library's
# calls to its own functions at link time. Data the patch defines is bound to its own copy
# by the compiler, not the linker: code addresses a static defined in the same image
# directly (no GOT), so no directive can send it to the program's copy. The patch report
# names those statics. Statics the patch only uses stay undefined and bind to the program.
# Both pinned by tests/build/test_macos_patch_binding.py (a real Mach-O link).
SELF_BINDING_DIRECTIVE = {
    OS_LINUX: ["-Wl,-Bsymbolic-functions"],
    OS_MACOS: ["-Wl,-twolevel_namespace"],
}

# rustc's per-invocation temp dir (``rustcXXXXXX``): deleted right after the original link.
_RUSTC_TEMP_DIR = re.compile(r"(^|[/\\])rustc[A-Za-z0-9]{6}([/\\]|$)")

# Linker options (inside ``-Wl,``) that take their value as the next linker argument.
_LINKER_OPTS_WITH_VALUE = {
    "--version-script",
    "-exported_symbols_list",
    "-unexported_symbols_list",
    "-undefined",
    "--unresolved-symbols",
    "-soname",
    "-install_name",
    "-h",
    "-z",
}

# Driver options dropped outright.
_DROPPED_DRIVER_FLAGS = {"-pie", "-static-pie", "-no-pie", "-shared", "-dynamiclib", "-dead_strip"}
# Driver options dropped together with their value (the next argument).
_DROPPED_DRIVER_PAIRS = {"-o", "-exported_symbols_list", "-unexported_symbols_list", "-undefined", "-install_name"}


class LinkPlanError(ValueError):
    """A captured link line that cannot be turned into a patch link."""


@dataclass(frozen=True)
class LinkPlan:
    program: str
    args: tuple[str, ...]
    cwd: str | None
    output: Path
    objects: tuple[Path, ...]
    dropped: tuple[str, ...] = field(default=(), repr=False)  # what was removed, for diagnostics

    @property
    def argv(self) -> list[str]:
        return [self.program, *self.args]


def _is_object(arg: str) -> bool:
    return arg.endswith((".o", ".obj"))


def _is_dependency_archive(arg: str) -> bool:
    return arg.endswith((".rlib", ".a"))


def _linker_option_dropped(option: str, value: str | None) -> bool:
    """Is ``option`` (one argument given to the linker itself) something a patch must lose?"""
    name = option.split("=", 1)[0]
    if name in ("--version-script", "--no-undefined-version", "--gc-sections", "-dead_strip"):
        return True
    if name in ("-exported_symbols_list", "-unexported_symbols_list", "-export_dynamic_list"):
        return True
    if name in ("--unresolved-symbols", "-undefined", "--no-undefined", "--no-allow-shlib-undefined"):
        return True
    if name in ("-soname", "-h", "-install_name", "-dylib", "-pie", "-no_pie"):
        # the patch must not claim the host's identity, nor be an executable
        return True
    if name == "-z" and value == "defs":
        return True
    if name.startswith("-Bsymbolic") or name in ("-flat_namespace", "-force_flat_namespace", "-interposable"):
        # -Bsymbolic would bind data too; flat namespace makes every function interposable.
        # The plan adds the binding a patch needs itself.
        return True
    if name == "-twolevel_namespace":
        return True
    return False


def _filter_linker_list(items: list[str]) -> list[str]:
    """Filter the comma-separated items of one ``-Wl,a,b,c`` argument."""
    kept: list[str] = []
    i = 0
    while i < len(items):
        item = items[i]
        takes_value = item in _LINKER_OPTS_WITH_VALUE
        value = items[i + 1] if takes_value and i + 1 < len(items) else None
        if _linker_option_dropped(item, value):
            i += 2 if takes_value else 1
            continue
        kept.append(item)
        if takes_value and value is not None:
            kept.append(value)
            i += 2
        else:
            i += 1
    return kept


def _filter_link_args(
    args: Sequence[str], dependency_archives: DependencyArchives
) -> tuple[list[str], int | None, list[str]]:
    """Returns (kept args, index in kept where the original objects were, dropped args)."""
    kept: list[str] = []
    dropped: list[str] = []
    objects_at: int | None = None
    # a linker option split across two -Wl arguments: ``-Wl,--version-script`` ``-Wl,PATH``
    pending_value_drop = False
    i = 0
    while i < len(args):
        arg = args[i]
        if pending_value_drop:
            pending_value_drop = False
            if arg.startswith("-Wl,"):
                dropped.append(arg)
                i += 1
                continue
            if arg == "-Xlinker" and i + 1 < len(args):
                dropped += args[i : i + 2]
                i += 2
                continue
        if arg in _DROPPED_DRIVER_PAIRS:
            dropped += args[i : i + 2]
            i += 2
            continue
        if arg.startswith("-o") and ("/" in arg or "\\" in arg):  # joined -oPATH
            dropped.append(arg)
            i += 1
            continue
        if arg in _DROPPED_DRIVER_FLAGS:
            dropped.append(arg)
            i += 1
            continue
        if arg == "-L" and i + 1 < len(args) and _RUSTC_TEMP_DIR.search(args[i + 1]):
            dropped += args[i : i + 2]
            i += 2
            continue
        if arg.startswith("-L") and len(arg) > 2 and _RUSTC_TEMP_DIR.search(arg[2:]):
            dropped.append(arg)
            i += 1
            continue
        if arg.startswith("-Wl,"):
            items = arg[4:].split(",")
            filtered = _filter_linker_list(items)
            if filtered != items:
                dropped.append(arg)
                if len(items) == 1 and items[0] in _LINKER_OPTS_WITH_VALUE and _linker_option_dropped(items[0], None):
                    pending_value_drop = True
            if filtered:
                kept.append("-Wl," + ",".join(filtered))
            i += 1
            continue
        if arg == "-Xlinker" and i + 1 < len(args):
            value = args[i + 1]
            if _linker_option_dropped(value, None):
                dropped += args[i : i + 2]
                pending_value_drop = value in _LINKER_OPTS_WITH_VALUE
                i += 2
                continue
            kept += args[i : i + 2]
            i += 2
            continue
        if not arg.startswith("-") and _is_object(arg):
            if objects_at is None:
                objects_at = len(kept)
            dropped.append(arg)
            i += 1
            continue
        if not arg.startswith("-") and _is_dependency_archive(arg) and dependency_archives == "drop":
            if objects_at is None:
                objects_at = len(kept)
            dropped.append(arg)
            i += 1
            continue
        kept.append(arg)
        i += 1
    return kept, objects_at, dropped


def build_link_plan(
    captured_link: LinkRecord,
    objects: Sequence[str | Path],
    output: str | Path,
    os: str | None = None,
    *,
    dependency_archives: DependencyArchives = "drop",
) -> LinkPlan:
    """The link of a patch library from the program's captured link line.

    ``captured_link``'s ``args`` have every ``@file`` argument expanded. ``objects`` are
    the patch's objects, in the order given; they take the place of the original objects, so
    that, when dependency archives are kept, a linker that scans archives in order still sees
    the objects first.

    ``dependency_archives``: "drop" removes every ``.rlib``/``.a`` input, so the patch's
    references to std and dependencies stay undefined and resolve against the running program
    at load time (one copy of std: one stdout, one allocator). "keep" links them in.
    """
    if dependency_archives not in ("drop", "keep"):
        raise ValueError(f"dependency_archives must be 'drop' or 'keep', not {dependency_archives!r}")
    family = normalize_os(os or host_os())
    if family not in UNRESOLVED_DIRECTIVE:
        raise LinkPlanError(f"patch libraries are not supported on {family} yet")
    linker, args = captured_link.linker, captured_link.args
    if not linker:
        raise LinkPlanError("the captured link line has no linker or no arguments")
    if not objects:
        raise LinkPlanError("a patch link needs at least one object")

    kept, objects_at, dropped = _filter_link_args(list(args), dependency_archives)
    new_objects = [str(o) for o in objects]
    if objects_at is None:
        objects_at = len(kept)
    final = [
        *kept[:objects_at],
        *new_objects,
        *kept[objects_at:],
        "-shared",
        *SELF_BINDING_DIRECTIVE[family],
        *UNRESOLVED_DIRECTIVE[family],
        "-o",
        str(output),
    ]
    return LinkPlan(
        program=linker,
        args=tuple(final),
        cwd=captured_link.cwd,
        output=Path(output),
        objects=tuple(o if isinstance(o, Path) else Path(o) for o in objects),  # hundreds: don't re-parse
        dropped=tuple(dropped),
    )
