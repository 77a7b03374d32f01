"""The running program's side of verify, computed once per program binary.

Every patch is checked against the same program: which functions it defines at which address
(for the jump table), the sizes of its statics (to warn about layout changes), its ``main``
(the jump table's reference address) and the names it exports (for the load check). None of
that changes between patches, so it is computed once per symbol table and kept with it, in
memory and in the on-disk symbol cache (``encode_index``/``decode_index``: plain arrays that
load in a few milliseconds, where rebuilding the table's symbols takes hundreds).
A patch's side of the jump table is the same index of the patch's table, built once per patch.
"""

from __future__ import annotations

import functools
import itertools
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from daemon.binary.demangle import demangle
from daemon.binary.symbols import DATA, DYNAMIC, ELF, FUNCTION, HIDDEN, INTERNAL, LOCAL, STATIC, TLS, SymbolTable

# The program's names repeat from patch to patch.
cached_demangle = functools.lru_cache(maxsize=1 << 16)(demangle)


def crate_of(demangled: str) -> str | None:
    """The first path segment of a demangled Rust name (``<a::B as c::D>::f`` → ``a``)."""
    text = demangled.lstrip("<&*[(")
    if text.startswith(("mut ", "dyn ", "const ")):
        text = text.split(" ", 1)[1]
    head = text.split("::", 1)[0]
    head = head.split("[", 1)[0]  # verbose crate hashes
    return head if head.isidentifier() else None


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
    # crate name -> function names of that crate, filled on first use (functions_of_crate)
    _by_crate: dict[str, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)

    def defines_function(self, name: str) -> bool:
        return name in self.functions or name in self.ambiguous_functions

    def function_names(self) -> Iterable[str]:
        return itertools.chain(self.functions, self.ambiguous_functions)

    def functions_of_crate(self, crate: str) -> frozenset[str]:
        """The function names whose demangled path starts with ``crate``, worked out on first
        use (the first patch that rebuilds ``crate``) and kept with the index."""
        names = self._by_crate.get(crate)
        if names is None:
            # A crate's name appears verbatim in every encoding of its symbols: a cheap filter
            # that spares demangling the whole program.
            names = frozenset(
                n for n in self.function_names() if crate in n and crate_of(cached_demangle(n)) == crate
            )
            self._by_crate[crate] = names
        return names


def build_index(table: SymbolTable) -> ProgramIndex:
    """Everything verify needs from ``table``, in one pass over its symbols (pure)."""
    main_name = table.symbol_prefix + "main"
    mains: set[int] = set()
    # First address (size) per name; names seen with another one are set aside. Cheaper than a
    # set per name: nearly every name has one.
    functions: dict[str, int] = {}
    several_addresses: set[str] = set()
    sizes: dict[str, int] = {}
    several_sizes: set[str] = set()
    data_names: set[str] = set()
    exported: set[str] = set()
    static_symbols = 0
    elf = table.format == ELF
    for raw_name, name, address, size, kind, binding, visibility, defined, _, in_table, _ in table.symbols:
        if in_table == STATIC:
            static_symbols += 1
        if not defined:
            continue
        if kind == FUNCTION:
            if name == main_name:
                mains.add(address)
            if raw_name and address and functions.setdefault(name, address) != address:
                several_addresses.add(name)
        elif kind == DATA or kind == TLS:
            if raw_name and sizes.setdefault(name, size) != size:
                several_sizes.add(name)
            if kind == DATA:
                data_names.add(name)
        if binding != LOCAL and visibility not in (HIDDEN, INTERNAL) and (not elf or in_table == DYNAMIC):
            exported.add(base_name(name) if "@" in name else name)
    for name in several_addresses:
        del functions[name]
    for name in several_sizes:
        del sizes[name]
    return ProgramIndex(
        main_addresses=tuple(sorted(mains)),
        functions=functions,
        ambiguous_functions=frozenset(several_addresses),
        data_sizes=sizes,
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

