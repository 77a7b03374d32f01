"""Builds that can't give a working patch, recognised early, each with the fix in plain words.

Pure functions: captured arguments and tool output in, a message (or None) out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from capture.rustc_args import codegen_value

_LTO_OFF = {"off", "no", "n", "false"}

LTO_ADVICE = (
    "the program was built with link-time optimisation (`-C lto={value}`), which merges crates "
    "into one another: a patch can't replace one crate's code. Set `lto = false` (or remove `lto`) "
    "in the `[profile.{profile}]` section of Cargo.toml, run `thinpatch capture` again and restart "
    "the program."
)

STRIP_ADVICE = (
    "the program was built with `-C strip={value}`, which removes the symbol table patches are "
    "matched against. Set `strip = false` in the `[profile.{profile}]` section of Cargo.toml, "
    "run `thinpatch capture` again and restart the program."
)

NO_SYMTAB_ADVICE = (
    "the program {path} has no symbol table (it was stripped: `strip = true` in Cargo.toml, or "
    "mold 1.x, which drops the symbol table when asked to strip only debug info, as cargo's release "
    "profile does by default), so none of its functions can be matched and a patch would change "
    "nothing. Set `strip = false` in the profile's section of Cargo.toml, run `thinpatch capture` "
    "again and restart the program."
)

THREAD_LOCAL_ADVICE = (
    "a `thread_local!` (or `#[thread_local]`) in the binary crate{named} can't be hot-patched: the "
    "program's crate uses the executable-only TLS model, which a patch library can't link "
    "(`{relocation} … -shared`). Move the thread-local into a library crate of the workspace "
    "and use it from there; then run `thinpatch capture` again and restart the program."
)

_TLS_EXEC_RELOCATION = re.compile(r"\b(R_[A-Z0-9_]*(?:TPOFF|TLSLE)[A-Z0-9_]*)\b(?: against (?:symbol )?`?([^\s`']+))?")
# rust-lld prints `krate::NAME::_$u7b$$u7b$constant$u7d$$u7d$::…`: the path up to the first escape
_RUST_PATH = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)+?)::(?:_\$|\{|__)")


def _profile(args: Sequence[str]) -> str:
    # cargo's dev profile passes debug assertions and no opt-level; good enough for a hint
    level = codegen_value(args, "opt-level")
    return "release" if level not in (None, "0") else "dev"


def lto_refusal(args: Sequence[str]) -> str | None:
    """Why a crate captured with LTO can't be patched, or None (cargo's default is no flag)."""
    value = codegen_value(args, "lto")
    if value is None or value.strip().lower() in _LTO_OFF:
        return None
    return LTO_ADVICE.format(value=value or "fat", profile=_profile(args))


def strip_refusal(args: Sequence[str]) -> str | None:
    """Why a program captured with ``-C strip=symbols`` can't be patched, or None."""
    value = codegen_value(args, "strip")
    if value != "symbols":
        return None
    return STRIP_ADVICE.format(value=value, profile=_profile(args))


def link_error_advice(stderr: str) -> str | None:
    """A plain-English fix for a patch link failure we know, or None."""
    if "-shared" in stderr or "recompile with -fPIC" in stderr:
        match = _TLS_EXEC_RELOCATION.search(stderr)
        if match:
            path = _RUST_PATH.match(match.group(2) or "")
            named = f" (`{path.group(1)}`)" if path else ""
            return THREAD_LOCAL_ADVICE.format(relocation=match.group(1), named=named)
    return None


def no_symbol_table_refusal(path: str) -> str:
    return NO_SYMTAB_ADVICE.format(path=path)
