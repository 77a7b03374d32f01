"""A patch library's symbols as verify needs them, read in one pass.

Verify looks at a patch's functions, ``main`` and statics (its index, as for the program: see
``program_index``), its imports and its defined statics; not at a ``Symbol`` for each of its
thousands of entries. ``read_patch_symbols`` finds those while it reads the ELF static table and
returns a ``SymbolTable`` whose full symbol list is decoded only if something asks for it (from
the bytes read, so it is the list ``read_symbols(path, dynamic=False)`` gives). Images it does
not read this way (Mach-O, no or several static tables, extended section indices) are read with
``read_symbols`` and indexed on first use, as before.
"""

from __future__ import annotations

import struct
from pathlib import Path

from daemon.binary.program_index import ProgramIndex, attach_index
from daemon.binary.symbol_cache import LazySymbols
from daemon.binary.symbols import (
    _ELF_ATTRIBUTES,
    _SHT_SYMTAB,
    DATA,
    ELF,
    FUNCTION,
    OTHER,
    STATIC,
    TLS,
    ElfLayout,
    Symbol,
    SymbolTable,
    _elf_extended_indices,
    _elf_symbols,
    _Section,
    elf_layout,
    gc_paused,
    mapped_file,
    normalise_name,
    read_symbols,
    section_bytes,
)


def read_patch_symbols(path: str | Path) -> SymbolTable:
    """The symbol table of the patch library at ``path``, its index and views built while reading."""
    path = Path(path)
    with mapped_file(path) as data:
        if bytes(data[:4]) != b"\x7fELF":
            return read_symbols(path, dynamic=False)
        layout = elf_layout(data, str(path))
        symtabs = [i for i, s in enumerate(layout.sections) if s.type == _SHT_SYMTAB]
        if len(symtabs) != 1 or _elf_extended_indices(data, layout.sections, symtabs[0], layout.end) is not None:
            return read_symbols(path, dynamic=False)
        symtab = layout.sections[symtabs[0]]
        entry_size = 24 if layout.bits == 64 else 16
        raw = bytes(data[symtab.offset : symtab.offset + symtab.size // entry_size * entry_size])
        strtab = section_bytes(data, layout.sections, symtab.link)
    with gc_paused():
        return index_static_table(layout, raw, strtab, str(path))


def index_static_table(layout: ElfLayout, raw: bytes, strtab: bytes, path: str) -> SymbolTable:
    """The table of an ELF image read from its static table alone (``raw``: its entries), with
    its program index, imports and defined data built in one pass over the entries (pure)."""
    bits, end = layout.bits, layout.end
    entry = struct.Struct(end + ("IBBHQQ" if bits == 64 else "IIIBBH"))
    rows = entry.iter_unpack(raw)
    next(rows, None)  # the null symbol
    if bits != 64:
        rows = ((n, info, other, shndx, value, size) for n, value, size, info, other, shndx in rows)
    # As in symbols._elf_symbols: Latin-1 keeps byte offsets, non-ASCII names are re-decoded.
    names = strtab.decode("latin-1") + "\0"
    find = names.find
    ascii_only = strtab.isascii()
    attributes = _ELF_ATTRIBUTES
    new = tuple.__new__

    mains: set[int] = set()
    functions: dict[str, int] = {}
    several_addresses: set[str] = set()
    sizes: dict[str, int] = {}
    several_sizes: set[str] = set()
    data_names: set[str] = set()
    imports: list[Symbol] = []
    defined_data: list[Symbol] = []
    count = 0
    for st_name, st_info, st_other, st_shndx, st_value, st_size in rows:
        count += 1
        kind, binding, visibility = attributes[st_info | (st_other & 3) << 8]
        if kind == OTHER and st_shndx:
            continue  # a defined label, section or file name: nothing verify looks at
        # (inline: a call per entry costs a tenth of the pass)
        name = names[st_name : find("\0", st_name)]
        if not ascii_only and not name.isascii():
            name = name.encode("latin-1").decode("utf-8", "surrogateescape")
        if not st_shndx:  # undefined: an import when it has a name
            if name:
                normalised = normalise_name(name) if ".llvm." in name else name
                symbol = (name, normalised, st_value, st_size, kind, binding, visibility, False, 0, STATIC, None)
                imports.append(new(Symbol, symbol))
        elif kind == FUNCTION:
            normalised = normalise_name(name) if ".llvm." in name else name
            if normalised == "main":
                mains.add(st_value)
            if name and st_value and functions.setdefault(normalised, st_value) != st_value:
                several_addresses.add(normalised)
        elif kind == DATA or kind == TLS:
            normalised = normalise_name(name) if ".llvm." in name else name
            if name and sizes.setdefault(normalised, st_size) != st_size:
                several_sizes.add(normalised)
            if kind == DATA:
                data_names.add(normalised)
                symbol = (name, normalised, st_value, st_size, kind, binding, visibility, True, st_shndx, STATIC, None)
                defined_data.append(new(Symbol, symbol))
    for name in several_addresses:
        del functions[name]
    for name in several_sizes:
        del sizes[name]

    section = _Section(_SHT_SYMTAB, 0, len(raw), 0, 0, entry.size)
    table = SymbolTable(
        path=path,
        format=ELF,
        bits=bits,
        little_endian=end == "<",
        shared=layout.shared,
        symbols=LazySymbols(count, lambda: tuple(_elf_symbols(raw, section, strtab, bits, end, STATIC, None, None))),
        needed=layout.needed,
        soname=layout.soname,
        runpath=layout.runpath,
        rpath=layout.rpath,
        _imports=tuple(imports),
        _defined_data=tuple(defined_data),
    )
    # A static table exports nothing to the loader: ELF images export from .dynsym only.
    index = ProgramIndex(
        main_addresses=tuple(sorted(mains)),
        functions=functions,
        ambiguous_functions=frozenset(several_addresses),
        data_sizes=sizes,
        data_names=frozenset(data_names),
        exported=frozenset(),
        static_symbols=count,
    )
    attach_index(table, index)
    return table
