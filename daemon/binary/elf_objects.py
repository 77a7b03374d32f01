"""ELF files section by section: sections, symbols with their section, and relocations.

``symbols.py`` answers "which names does this file define and need"; this module answers
"what bytes make up each function and what do they refer to", which change analysis needs.
It reads 64-bit little-endian ELF (x86_64 and aarch64): relocatable objects (``.o``, the
members of an ``.rlib``) and linked images alike. ``parse_object(data)`` is pure;
``read_object(path)`` and ``archive_members(path)`` read files.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar, cast

T = TypeVar("T")

EM_X86_64 = 62
EM_AARCH64 = 183

ET_REL = 1

SHT_SYMTAB = 2
SHT_RELA = 4
SHT_NOBITS = 8
SHT_REL = 9
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

STT_OBJECT = 1
STT_FUNC = 2
STT_SECTION = 3
STT_TLS = 6

SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00

# Absolute relocations the compiler puts into debug sections: the field holds S + A.
_ABSOLUTE = {
    EM_X86_64: {1: 8, 10: 4, 11: 4},  # R_X86_64_64, _32, _32S
    EM_AARCH64: {257: 8, 258: 4},  # R_AARCH64_ABS64, _ABS32
}

_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_REL = struct.Struct("<QQ")


class ObjectFormatError(ValueError):
    """Not an ELF file this reader understands (says which and why)."""


class Section(NamedTuple):  # a tuple: made by the thousand per object, cheaply
    index: int  # type: ignore[assignment]  # a field, not tuple.index
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR)


class ObjSymbol(NamedTuple):
    index: int  # type: ignore[assignment]  # a field, not tuple.index
    name: str
    type: int  # STT_*
    binding: int  # STB_*: 0 local, 1 global, 2 weak
    section: int  # section index; SHN_UNDEF for a symbol defined elsewhere
    value: int  # section-relative in a relocatable object, an address in a linked image
    size: int

    @property
    def defined(self) -> bool:
        return self.section != SHN_UNDEF and self.section < SHN_LORESERVE


class Relocation(NamedTuple):
    offset: int  # within the section it applies to (an address in a linked image)
    type: int  # R_<arch>_* number
    symbol: int  # index into ElfObject.symbols (0: none)
    addend: int


@dataclass
class ElfObject:
    path: str
    data: bytes
    machine: int
    file_type: int
    sections: list[Section]
    symbols: list[ObjSymbol]
    _relocation_sections: dict[int, list[Section]] = field(default_factory=dict)  # target -> REL/RELA sections
    _relocations: dict[int, list[Relocation]] = field(default_factory=dict)  # read on first use
    # What callers made of ``symbols`` alone, by the function that made it; a parse that takes
    # over an earlier parse's symbols takes these too. Read only, as the symbols are.
    _made_of_symbols: dict[object, object] = field(default_factory=dict, repr=False, compare=False)

    def made_of_symbols(self, make: Callable[[list[ObjSymbol]], T]) -> T:
        """``make(self.symbols)``, made once for these symbols (don't change what it returns)."""
        found = self._made_of_symbols.get(make)
        if found is None:
            found = self._made_of_symbols[make] = make(self.symbols)
        return cast(T, found)

    @property
    def relocatable(self) -> bool:
        return self.file_type == ET_REL

    def section_named(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def section_data(self, section: Section) -> bytes:
        if section.type == SHT_NOBITS:
            return bytes(section.size)
        return self.data[section.offset : section.offset + section.size]

    def relocations(self, section: Section) -> list[Relocation]:
        """The relocations that apply to ``section`` (empty in a linked image's code)."""
        found = self._relocations.get(section.index)
        if found is None:
            found = []
            for rel_section in self._relocation_sections.get(section.index, []):
                found.extend(_read_relocations(self.data, rel_section))
            self._relocations[section.index] = found
        return found

    def forget_relocations(self) -> None:
        """Drop the relocations decoded so far (memory; they are read again when asked for)."""
        self._relocations.clear()

    def relocation_bytes(self, section: Section) -> tuple[tuple[int, bytes], ...]:
        """The raw entries of the REL/RELA sections that apply to ``section``, as (type, bytes):
        compared as they stand, two sections' relocations are equal without decoding them."""
        return tuple(
            (s.type, self.data[s.offset : s.offset + s.size]) for s in self._relocation_sections.get(section.index, [])
        )

    def has_relocations(self, section: Section) -> bool:
        """Whether any REL/RELA section applies to ``section`` (``relocation_bytes`` is not empty)."""
        return section.index in self._relocation_sections

    def relocation_symbols(self, section: Section) -> set[int]:
        """The symbol indices the relocations of ``section`` refer to (without decoding each entry)."""
        return relocation_symbols(self.relocation_bytes(section))

    def relocated(self, name: str) -> bytes | None:
        """A non-code section's bytes with its absolute relocations applied (S + A), as a
        linker would write them: how DWARF in an object file is read. None if absent."""
        section = self.section_named(name)
        if section is None:
            return None
        data = self.section_data(section)
        widths = _ABSOLUTE.get(self.machine, {})
        relocations = self.relocations(section)
        if not relocations:
            return data
        out = bytearray(data)
        for rel in relocations:
            width = widths.get(rel.type)
            if width is None or rel.offset + width > len(out):
                continue
            symbol = self.symbols[rel.symbol] if 0 < rel.symbol < len(self.symbols) else None
            base = symbol.value if symbol is not None and symbol.type != STT_SECTION else 0
            value = (base + rel.addend) & ((1 << (8 * width)) - 1)
            out[rel.offset : rel.offset + width] = value.to_bytes(width, "little")
        return bytes(out)


def relocation_symbols(entries: tuple[tuple[int, bytes], ...]) -> set[int]:
    """The symbol indices raw relocation entries (``ElfObject.relocation_bytes``) refer to."""
    found: set[int] = set()
    for rel_type, raw in entries:
        width = 3 if rel_type == SHT_RELA else 2
        usable = len(raw) - len(raw) % (8 * width)
        if sys.byteorder == "little":  # the symbol is r_info's upper half: every (2 * width)th 32-bit word
            found.update(memoryview(raw)[:usable].cast("I")[3 :: 2 * width])
        else:
            entries_format = "<QQq" if width == 3 else "<QQ"
            found.update(info >> 32 for _, info, *_ in struct.iter_unpack(entries_format, raw[:usable]))
    return found


def same_relocation_entries(rel_type: int, old: bytes, new: bytes, symbol_map: Mapping[int, int]) -> bool:
    """Whether two runs of raw REL/RELA entries (of equal length) have the same offsets, types
    and addends, and each symbol of ``new`` maps (``symbol_map``) to the symbol of ``old``'s
    entry at the same place."""
    width = 3 if rel_type == SHT_RELA else 2
    usable = len(new) - len(new) % (8 * width)
    if sys.byteorder == "little":  # 32-bit words: offset (2), type, symbol, then for RELA the addend (2)
        words = 2 * width
        old_words, new_words = memoryview(old)[:usable].cast("I"), memoryview(new)[:usable].cast("I")
        for field in range(words):
            if field != 3 and old_words[field::words] != new_words[field::words]:
                return False
        return [symbol_map.get(s) for s in new_words[3::words]] == old_words[3::words].tolist()
    entries_format = "<QQq" if width == 3 else "<QQ"
    pairs = zip(struct.iter_unpack(entries_format, old[:usable]), struct.iter_unpack(entries_format, new[:usable]))
    return all(
        (a[0], a[1] & 0xFFFFFFFF, a[2:]) == (b[0], b[1] & 0xFFFFFFFF, b[2:])  # offset, type, addend
        and symbol_map.get(b[1] >> 32) == a[1] >> 32
        for a, b in pairs
    )


def relocation_symbols_and_addends(entries: tuple[tuple[int, bytes], ...]) -> list[tuple[int, int]]:
    """(symbol index, addend) of each raw relocation entry, in order (REL entries: addend 0)."""
    found: list[tuple[int, int]] = []
    for rel_type, raw in entries:
        layout = _RELA if rel_type == SHT_RELA else _REL
        body = raw[: len(raw) - len(raw) % layout.size]
        if layout is _RELA:
            found.extend((info >> 32, addend) for _, info, addend in _RELA.iter_unpack(body))
        else:
            found.extend((info >> 32, 0) for _, info in _REL.iter_unpack(body))
    return found


def _cstr(table: bytes, offset: int) -> str:
    stop = table.find(b"\0", offset)
    return table[offset : stop if stop >= 0 else len(table)].decode("utf-8", "surrogateescape")


def _strings(table: bytes) -> dict[int, str]:
    """The strings of a string table by the offset each starts at, split and decoded at once
    (names that start inside another string are read with ``_cstr``)."""
    found: dict[int, str] = {}
    offset = 0
    for text in table.decode("ascii").split("\0") if table.isascii() else ():
        found[offset] = text
        offset += len(text) + 1
    return found


# A NamedTuple made from a tuple without its Python-level __new__ (called per symbol).
_new = tuple.__new__


def _symbol_tables(data: bytes, sections: list[Section]) -> tuple[bytes, bytes] | None:
    """The symbol table's entries and its string table, or None without them."""
    symtab = next((s for s in sections if s.type == SHT_SYMTAB), None)
    if symtab is None or not 0 < symtab.link < len(sections):
        return None
    strtab = sections[symtab.link]
    body = data[symtab.offset : symtab.offset + symtab.size - symtab.size % _SYMBOL.size]
    return body, data[strtab.offset : strtab.offset + strtab.size]


def _read_symbols(body: bytes, strtab: bytes, sections: list[Section]) -> list[ObjSymbol]:
    strings = _strings(strtab)
    count = len(sections)
    symbols = []
    for index, (name, info, _other, shndx, value, size) in enumerate(_SYMBOL.iter_unpack(body)):
        symbol_type = info & 0xF
        text = strings.get(name)
        if text is None:  # a name that ends another one (a shared tail)
            text = _cstr(strtab, name)
        if symbol_type == STT_SECTION and not text and 0 < shndx < count:
            text = sections[shndx].name
        symbols.append(_new(ObjSymbol, (index, text, symbol_type, info >> 4, shndx, value, size)))
    return symbols


def parse_object(data: bytes, path: str = "", like: ElfObject | None = None) -> ElfObject:
    """Sections, symbols and relocations of a 64-bit little-endian ELF file (pure). ``like``:
    an earlier parse of a similar file (an earlier build of the same unit), whose symbols are
    taken over where both symbol tables and their strings are byte for byte the same."""
    if data[:4] != b"\x7fELF":
        raise ObjectFormatError(f"{path or 'data'}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ObjectFormatError(f"{path or 'data'}: only 64-bit little-endian ELF is read")
    (_, e_type, e_machine, _, _, _, e_shoff, _, _, _, _, e_shentsize, e_shnum, e_shstrndx) = _HEADER.unpack_from(
        data, 0
    )
    raw: list[tuple[int, ...]] = []
    if e_shoff:
        if e_shnum == 0:  # more than 0xff00 sections: the real count is in section 0
            e_shnum = _SECTION.unpack_from(data, e_shoff)[5]
        if e_shstrndx == 0xFFFF:
            e_shstrndx = _SECTION.unpack_from(data, e_shoff)[7]
        raw = [_SECTION.unpack_from(data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
    names = b""
    if 0 < e_shstrndx < len(raw):
        names = data[raw[e_shstrndx][4] : raw[e_shstrndx][4] + raw[e_shstrndx][5]]
    section_names = _strings(names)
    sections = [
        _new(Section, (i, section_names.get(r[0]) or _cstr(names, r[0]), *r[1:8])) for i, r in enumerate(raw)
    ]
    tables = _symbol_tables(data, sections)
    symbols: list[ObjSymbol] = []
    if tables is not None:
        if (
            like is not None
            and _symbol_tables(like.data, like.sections) == tables
            and [s.name for s in like.sections] == [s.name for s in sections]  # they name section symbols
        ):
            symbols = like.symbols  # decoded from the same bytes: the same symbols
        else:
            symbols = _read_symbols(*tables, sections)
    relocation_sections: dict[int, list[Section]] = {}
    for s in sections:
        if s.type in (SHT_RELA, SHT_REL) and 0 < s.info < len(sections):
            relocation_sections.setdefault(s.info, []).append(s)
    made = like._made_of_symbols if like is not None and symbols is like.symbols else {}
    return ElfObject(path, data, e_machine, e_type, sections, symbols, relocation_sections, _made_of_symbols=made)


def _read_relocations(data: bytes, s: Section) -> list[Relocation]:
    body = data[s.offset : s.offset + s.size]
    if s.type == SHT_RELA:
        return [
            Relocation(off, info & 0xFFFFFFFF, info >> 32, addend)
            for off, info, addend in _RELA.iter_unpack(body[: len(body) - len(body) % _RELA.size])
        ]
    return [
        Relocation(off, info & 0xFFFFFFFF, info >> 32, 0)
        for off, info in _REL.iter_unpack(body[: len(body) - len(body) % _REL.size])
    ]


def read_object(path: str | Path) -> ElfObject:
    return parse_object(Path(path).read_bytes(), str(path))


def archive_members(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The members of a System V / GNU ``ar`` archive (an ``.rlib``), as (name, bytes); the
    archive's own symbol and name tables are skipped (pure)."""
    if not data.startswith(b"!<arch>\n"):
        raise ObjectFormatError("not an ar archive")
    position = 8
    long_names = b""
    while position + 60 <= len(data):
        header = data[position : position + 60]
        name = header[:16].decode("ascii", "replace").rstrip()
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise ObjectFormatError(f"a damaged ar member header at byte {position}") from exc
        body = data[position + 60 : position + 60 + size]
        position += 60 + size + (size & 1)
        if name in ("/", "/SYM64/"):
            continue
        if name == "//":
            long_names = body
            continue
        if name.startswith("#1/"):  # BSD: the name leads the body
            length = int(name[3:])
            name, body = body[:length].rstrip(b"\0").decode("utf-8", "replace"), body[length:]
        elif name.startswith("/") and name[1:].isdigit():
            start = int(name[1:])  # GNU: names end with "/\n" there
            stop = long_names.find(b"\n", start)
            name = long_names[start : stop if stop >= 0 else len(long_names)].decode("utf-8", "replace")
        yield name.rstrip("/"), body


def objects_in(data: bytes, path: str) -> Iterator[ElfObject]:
    """The ELF objects in a file's bytes: the file itself, or each object member of an archive."""
    if data.startswith(b"!<arch>\n"):
        for name, body in archive_members(data):
            if name.endswith(".o") and body.startswith(b"\x7fELF"):  # not lib.rmeta
                yield parse_object(body, f"{path}({name})")
    else:
        yield parse_object(data, path)


def object_files(path: str | Path) -> Iterator[ElfObject]:
    """The ELF objects in ``path``: the file itself, or each object member of an archive."""
    return objects_in(Path(path).read_bytes(), str(path))
