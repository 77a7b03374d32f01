"""The running program's side of verify, computed once per program binary.

Every patch is checked against the same program: which functions it defines at which address
(for the jump table), the sizes of its statics (to warn about layout changes), its ``main``
(the jump table's reference address) and the names it exports (for the load check). None of
that changes between patches, so it is computed once per symbol table and kept with it, in
memory and in the on-disk symbol cache (``encode_index``/``decode_index``: plain arrays that
load in a few milliseconds, where rebuilding the table's symbols takes hundreds).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from daemon.binary.symbols import DATA, DYNAMIC, ELF, FUNCTION, HIDDEN, INTERNAL, LOCAL, STATIC, TLS, SymbolTable


def base_name(name: str) -> str:
    """``memcpy@GLIBC_2.14`` / ``memcpy@@GLIBC_2.14`` match by base name."""
    return name.split("@", 1)[0]


@dataclass(frozen=True)
class ProgramIndex:
    main_addresses: tuple[int, ...]  # defined functions named ``main`` (``_main`` on Mach-O)
    functions: dict[str, int]  # normalised name -> address, for names defined at one address
    ambiguous_functions: frozenset[str]  # names defined at several addresses
    data_sizes: dict[str, int]  # data/TLS names defined with one size -> that size
    data_names: frozenset[str]  # every defined data symbol's normalised name
    exported: frozenset[str]  # base names another image can bind to
    static_symbols: int  # entries of .symtab (0: stripped, only exported names are left)
    # crate name -> function names of that crate (demangled), filled on first use
    _by_crate: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)

    def defines_function(self, name: str) -> bool:
        return name in self.functions or name in self.ambiguous_functions

    def function_names(self) -> Iterable[str]:
        yield from self.functions
        yield from self.ambiguous_functions


def build_index(table: SymbolTable) -> ProgramIndex:
    """Everything verify needs from ``table``, in one pass over its symbols (pure)."""
    main_name = table.symbol_prefix + "main"
    mains: set[int] = set()
    addresses: dict[str, set[int]] = {}
    sizes: dict[str, set[int]] = {}
    data_names: set[str] = set()
    exported: set[str] = set()
    static_symbols = 0
    elf = table.format == ELF
    for s in table.symbols:
        if s.table == STATIC:
            static_symbols += 1
        if not s.defined:
            continue
        name = s.normalised
        kind = s.kind
        if kind == FUNCTION:
            if name == main_name:
                mains.add(s.address)
            if s.name and s.address:
                addresses.setdefault(name, set()).add(s.address)
        elif kind == DATA or kind == TLS:
            if s.name:
                sizes.setdefault(name, set()).add(s.size)
            if kind == DATA:
                data_names.add(name)
        if s.binding != LOCAL and s.visibility not in (HIDDEN, INTERNAL) and (not elf or s.table == DYNAMIC):
            exported.add(base_name(name))
    functions = {n: next(iter(a)) for n, a in addresses.items() if len(a) == 1}
    return ProgramIndex(
        main_addresses=tuple(sorted(mains)),
        functions=functions,
        ambiguous_functions=frozenset(n for n, a in addresses.items() if len(a) != 1),
        data_sizes={n: next(iter(z)) for n, z in sizes.items() if len(z) == 1},
        data_names=frozenset(data_names),
        exported=frozenset(exported),
        static_symbols=static_symbols,
    )


def program_index(table: SymbolTable) -> ProgramIndex:
    """The index of ``table``, built on first use and kept on the table."""
    index = table._program_index
    if index is None:
        index = build_index(table)
        attach_index(table, index)
    return index


def attach_index(table: SymbolTable, index: ProgramIndex) -> None:
    object.__setattr__(table, "_program_index", index)


# --------------------------------------------------------------------------- on disk

# Layout: a u32 count of sections, their byte lengths (u64 each), then the sections:
# names are "\0"-joined UTF-8, numbers are native-endian u64 arrays.
_SECTIONS = (
    "counts",
    "main_addresses",
    "function_names",
    "function_addresses",
    "ambiguous_functions",
    "data_names_sized",
    "data_sizes",
    "data_names",
    "exported",
)


def _join(names: Iterable[str]) -> bytes:
    return "\0".join(names).encode("utf-8", "surrogateescape")


def _split(blob: bytes) -> list[str]:
    return blob.decode("utf-8", "surrogateescape").split("\0") if blob else []


def encode_index(index: ProgramIndex) -> bytes:
    sections = [
        array("Q", [index.static_symbols]).tobytes(),
        array("Q", index.main_addresses).tobytes(),
        _join(index.functions),
        array("Q", index.functions.values()).tobytes(),
        _join(sorted(index.ambiguous_functions)),
        _join(index.data_sizes),
        array("Q", index.data_sizes.values()).tobytes(),
        _join(sorted(index.data_names)),
        _join(sorted(index.exported)),
    ]
    head = struct.pack(f"<I{len(sections)}Q", len(sections), *map(len, sections))
    return head + b"".join(sections)


def decode_index(blob: bytes | memoryview) -> ProgramIndex:
    """The index written by ``encode_index``; ValueError if the blob is damaged."""
    view = memoryview(blob)
    (count,) = struct.unpack_from("<I", view, 0)
    if count != len(_SECTIONS):
        raise ValueError("program index with another layout")
    lengths = struct.unpack_from(f"<{count}Q", view, 4)
    offset = 4 + 8 * count
    if offset + sum(lengths) != len(view):
        raise ValueError("program index has the wrong length")
    parts = []
    for length in lengths:
        parts.append(view[offset : offset + length])
        offset += length

    def numbers(part: memoryview) -> array[int]:
        values = array("Q")
        values.frombytes(part)
        return values

    counts, mains, names, addresses, ambiguous, sized_names, sizes, data_names, exported = parts
    function_names = _split(bytes(names))
    function_addresses = numbers(addresses)
    sized = _split(bytes(sized_names))
    size_values = numbers(sizes)
    if len(function_names) != len(function_addresses) or len(sized) != len(size_values) or len(counts) != 8:
        raise ValueError("program index columns disagree")
    return ProgramIndex(
        main_addresses=tuple(numbers(mains)),
        functions=dict(zip(function_names, function_addresses)),
        ambiguous_functions=frozenset(_split(bytes(ambiguous))),
        data_sizes=dict(zip(sized, size_values)),
        data_names=frozenset(_split(bytes(data_names))),
        exported=frozenset(_split(bytes(exported))),
        static_symbols=numbers(counts)[0],
    )

