"""Jump tables in subsecond's format, computed from two symbol tables (pure).

``JumpTable.to_json()`` is what ``serde_json`` reads as ``subsecond_types::JumpTable``:
``lib`` (a path), ``map`` (``HashMap<u64, u64>``, whose keys JSON writes as decimal
strings), ``aslr_reference`` and ``new_base_address`` (the static addresses of ``main``
in the running binary and in the patch, which the client subtracts from ``dlsym``
results to get each image's slide) and ``ifunc_count`` (0 outside WebAssembly).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from daemon.binary.program_index import ProgramIndex, program_index
from daemon.binary.program_index import cached_demangle as _demangle
from daemon.binary.program_index import crate_of as crate_of  # where the service and tests find it
from daemon.binary.symbols import SymbolTable

# Crates of the Rust toolchain: their functions appear in a patch only as instantiations of
# generics, so their absence from a patch never means a function was removed.
TOOLCHAIN_CRATES = frozenset(
    {
        "std",
        "core",
        "alloc",
        "proc_macro",
        "test",
        "compiler_builtins",
        "panic_unwind",
        "panic_abort",
        "unwind",
        "std_detect",
        "rustc_demangle",
        "addr2line",
        "gimli",
        "miniz_oxide",
        "object",
        "memchr",
        "hashbrown",
        "adler2",
        "cfg_if",
        "libc",
    }
)


class JumpTableError(ValueError):
    """The images lack what a jump table needs (``main`` in either of them)."""


@dataclass(frozen=True)
class JumpTable:
    lib: str
    map: dict[int, int]
    aslr_reference: int
    new_base_address: int
    ifunc_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "lib": self.lib,
            "map": {str(old): new for old, new in sorted(self.map.items())},
            "aslr_reference": self.aslr_reference,
            "new_base_address": self.new_base_address,
            "ifunc_count": self.ifunc_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JumpTable:
        return cls(
            lib=data["lib"],
            map={int(old): int(new) for old, new in data["map"].items()},
            aslr_reference=int(data["aslr_reference"]),
            new_base_address=int(data["new_base_address"]),
            ifunc_count=int(data.get("ifunc_count", 0)),
        )


@dataclass(frozen=True)
class DataSizeChange:
    name: str  # demangled
    symbol: str  # as in the symbol table
    old_size: int
    new_size: int


@dataclass(frozen=True)
class PatchReport:
    mapped: int
    added: list[str] = field(default_factory=list)  # demangled, sorted
    removed: list[str] = field(default_factory=list)
    data_size_changes: list[DataSizeChange] = field(default_factory=list)
    skipped_ambiguous: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mapped": self.mapped,
            "added": self.added,
            "removed": self.removed,
            "data_size_changes": [
                {"name": c.name, "symbol": c.symbol, "old_size": c.old_size, "new_size": c.new_size}
                for c in self.data_size_changes
            ],
            "skipped_ambiguous": self.skipped_ambiguous,
            "warnings": self.warnings,
        }


def _main_address(table: SymbolTable, role: str, index: ProgramIndex) -> int:
    candidates = set(index.main_addresses)
    if len(candidates) != 1:
        found = "no" if not candidates else "several"
        name = table.symbol_prefix + "main"
        raise JumpTableError(f"the {role} ({table.path}) has {found} `{name}` function; a jump table needs exactly one")
    return candidates.pop()


def compute_jump_table(
    host: SymbolTable,
    patch: SymbolTable,
    lib_path: str,
    crate_names: Iterable[str] | None = None,
) -> tuple[JumpTable, PatchReport]:
    """Map every function defined in both images under one name, old address → new address.

    A name defined at more than one address in either image (local functions that share a
    mangled name) cannot be paired reliably, so it is left out and reported. ``removed``
    lists host functions missing from the patch, limited to ``crate_names`` (the crates the
    patch rebuilt); without it, to the non-toolchain crates the patch defines functions of.
    """
    old = program_index(host)
    # The patch's side in one pass over its symbols, as for the program (kept only with the
    # patch's table, which is read once per patch).
    new = program_index(patch)
    aslr_reference = _main_address(host, "running binary", old)
    new_base_address = _main_address(patch, "patch", new)

    old_functions = old.functions
    old_ambiguous = old.ambiguous_functions
    mapping: dict[int, int] = {}
    ambiguous: list[str] = []
    added_names: list[str] = []
    for name, new_address in new.functions.items():
        old_address = old_functions.get(name)
        if old_address is not None:
            mapping[old_address] = new_address
        elif name in old_ambiguous:
            ambiguous.append(name)
        else:
            added_names.append(name)
    for name in new.ambiguous_functions:  # defined at several addresses in the patch
        if name in old_functions or name in old_ambiguous:
            ambiguous.append(name)
        else:
            added_names.append(name)

    added = sorted({_demangle(n) for n in added_names})

    if crate_names is None:
        crates = {crate_of(_demangle(n)) for n in new.function_names()}
        owned = {crate for crate in crates if crate is not None} - TOOLCHAIN_CRATES
    else:
        owned = set(crate_names)
    removed = sorted(
        {_demangle(n) for crate in owned for n in old.functions_of_crate(crate) if not new.defines_function(n)}
    )

    changes: list[DataSizeChange] = []
    old_sizes = old.data_sizes
    for name, new_size in new.data_sizes.items():  # names defined with one size
        old_size = old_sizes.get(name)
        if old_size is None or old_size == new_size:
            continue
        changes.append(DataSizeChange(_demangle(name), name, old_size, new_size))
    changes.sort(key=lambda c: c.name)

    warnings = [
        f"`{c.name}` changed size ({c.old_size} -> {c.new_size} bytes): a hot patch cannot change a"
        " static's layout; restart the program to pick this change up"
        for c in changes
    ]
    report = PatchReport(
        mapped=len(mapping),
        added=added,
        removed=removed,
        data_size_changes=changes,
        skipped_ambiguous=sorted(_demangle(n) for n in ambiguous),
        warnings=warnings,
    )
    table = JumpTable(
        lib=lib_path,
        map=mapping,
        aslr_reference=aslr_reference,
        new_base_address=new_base_address,
    )
    return table, report
