"""Symbol tables of ELF and Mach-O files, read with ``struct`` over ``mmap``.

``parse_symbols(data)`` is pure (bytes in, ``SymbolTable`` out); ``read_symbols(path)`` maps
the file and calls it. A small reader beats LIEF and pyelftools on the files that matter
here (see ``bench/bench_symbols.py``) and keeps the runtime free of heavy dependencies.
"""

from __future__ import annotations

import gc
import itertools
import mmap
import operator
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from capture.platforms import ObjectFormat

if TYPE_CHECKING:
    from daemon.binary.program_index import ProgramIndex

FUNCTION = "function"
DATA = "data"
TLS = "tls"
OTHER = "other"

LOCAL = "local"
GLOBAL = "global"
WEAK = "weak"

DEFAULT = "default"
INTERNAL = "internal"
HIDDEN = "hidden"
PROTECTED = "protected"

STATIC = "static"  # .symtab, or a Mach-O LC_SYMTAB
DYNAMIC = "dynamic"  # .dynsym

# The object formats this reader understands (a file's format, whatever it was built for;
# capture.platforms relates them to platforms).
ELF = ObjectFormat.ELF
MACHO = ObjectFormat.MACHO

_LLVM_SUFFIX = re.compile(r"\.llvm\.\d+$")
_table_of = operator.attrgetter("table")


def normalise_name(name: str) -> str:
    """The name used for matching: LLVM's ``.llvm.<digits>`` suffix differs between builds."""
    if ".llvm." in name:
        return _LLVM_SUFFIX.sub("", name)
    return name


class Symbol(NamedTuple):
    name: str
    normalised: str
    address: int
    size: int
    kind: str  # FUNCTION / DATA / TLS / OTHER
    binding: str  # LOCAL / GLOBAL / WEAK
    visibility: str  # DEFAULT / INTERNAL / HIDDEN / PROTECTED
    defined: bool
    section_index: int
    table: str  # STATIC / DYNAMIC
    version: str | None = None  # ELF symbol version (``GLIBC_2.14``), without the ``@``


@dataclass(frozen=True)
class SymbolTable:
    path: str
    format: ObjectFormat  # ELF / MACHO
    bits: int
    little_endian: bool
    shared: bool  # ELF ET_DYN / Mach-O MH_DYLIB or MH_BUNDLE (a PIE executable is ET_DYN too)
    symbols: Sequence[Symbol]  # a tuple, or the symbol cache's LazySymbols
    needed: tuple[str, ...] = ()  # DT_NEEDED / LC_LOAD_DYLIB
    soname: str | None = None  # DT_SONAME / LC_ID_DYLIB
    runpath: tuple[str, ...] = ()  # DT_RUNPATH / LC_RPATH
    rpath: tuple[str, ...] = ()  # DT_RPATH (ignored by the loader when DT_RUNPATH is set)
    _index: dict[str, list[Symbol]] | None = field(default=None, repr=False, compare=False, hash=False)
    # the program's side of verify (daemon.binary.program_index), built once per table
    _program_index: ProgramIndex | None = field(default=None, repr=False, compare=False, hash=False)
    # imports() and defined(DATA), when a reader found them without decoding every symbol
    # (daemon.binary.patch_symbols)
    _imports: tuple[Symbol, ...] | None = field(default=None, repr=False, compare=False, hash=False)
    _defined_data: tuple[Symbol, ...] | None = field(default=None, repr=False, compare=False, hash=False)

    @property
    def symbol_prefix(self) -> str:
        """What the platform puts before C names: ``_main`` on Mach-O, ``main`` on ELF."""
        return "_" if self.format == MACHO else ""

    def in_table(self, table: str) -> Iterator[Symbol]:
        return (s for s in self.symbols if s.table == table)

    def defined(self, kind: str | None = None) -> Iterator[Symbol]:
        """Defined symbols from every table (a name in both tables appears twice)."""
        if kind == DATA and self._defined_data is not None:
            return iter(self._defined_data)
        if kind is None:
            return (s for s in self.symbols if s.defined)
        return (s for s in self.symbols if s.kind == kind and s.defined)

    def exported(self) -> Iterator[Symbol]:
        """Symbols another image can bind to at run time."""
        for s in self.symbols:
            if not s.defined or s.binding == LOCAL or s.visibility in (HIDDEN, INTERNAL):
                continue
            if self.format == ELF and s.table != DYNAMIC:
                continue
            yield s

    def imports(self) -> Iterator[Symbol]:
        """Undefined symbols the loader must bind (ELF: the dynamic table when there is one)."""
        if self._imports is not None:
            return iter(self._imports)
        symbols = self.symbols
        if self.format == ELF and DYNAMIC in map(_table_of, symbols):
            return (s for s in symbols if s.table == DYNAMIC and not s.defined and s.name)
        return (s for s in symbols if not s.defined and s.name)

    def lookup(self, name: str) -> list[Symbol]:
        """Defined symbols whose normalised name is ``name``."""
        index = self._index
        if index is None:
            index = {}
            for s in self.symbols:
                if s.defined:
                    index.setdefault(s.normalised, []).append(s)
            object.__setattr__(self, "_index", index)
        return index.get(name, [])


@contextmanager
def mapped_file(path: Path) -> Iterator[mmap.mmap]:
    """The file at ``path`` mapped read-only, unmapped on leaving; ``FormatError`` if it is empty
    (``mmap`` cannot map nothing)."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as e:
            raise FormatError(f"{path}: empty file") from e
    try:
        yield data
    finally:
        data.close()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small tuples: it would rescan them for nothing
    (a third of the parse time of a large library)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class FormatError(ValueError):
    """The file is not an ELF or Mach-O image this reader understands."""


def read_symbols(path: str | Path, *, dynamic: bool = True) -> SymbolTable:
    """Read the symbol tables of the file at ``path``.

    ``dynamic=False`` reads an ELF image that has a ``.symtab`` from it alone: there, the
    ``.dynsym`` only repeats its global entries (a third of a patch library's symbols), and
    the undefined ones in ``.symtab`` are the imports."""
    path = Path(path)
    with mapped_file(path) as data, gc_paused():
        return parse_symbols(data, str(path), dynamic=dynamic)


def parse_symbols(data: bytes | mmap.mmap, path: str = "", *, dynamic: bool = True) -> SymbolTable:
    magic = bytes(data[:4])
    if magic == b"\x7fELF":
        return _parse_elf(data, path, dynamic)
    if magic in (b"\xcf\xfa\xed\xfe", b"\xfe\xed\xfa\xcf"):
        return _parse_macho64(data, path)
    raise FormatError(f"{path or 'data'}: not an ELF or 64-bit Mach-O file (magic {magic!r})")


# --- ELF -------------------------------------------------------------------------------------

_SHT_SYMTAB = 2
_SHT_DYNAMIC = 6
_SHT_DYNSYM = 11
_SHT_SYMTAB_SHNDX = 18
_SHT_GNU_VERDEF = 0x6FFFFFFD
_SHT_GNU_VERNEED = 0x6FFFFFFE
_SHT_GNU_VERSYM = 0x6FFFFFFF

_SHN_UNDEF = 0
_SHN_XINDEX = 0xFFFF

_DT_NEEDED = 1
_DT_SONAME = 14
_DT_RPATH = 15
_DT_RUNPATH = 29

_ELF_KINDS = {2: FUNCTION, 10: FUNCTION, 1: DATA, 5: DATA, 6: TLS}  # FUNC, GNU_IFUNC, OBJECT, COMMON, TLS
_ELF_BINDINGS = {0: LOCAL, 1: GLOBAL, 2: WEAK, 10: GLOBAL}  # 10: GNU_UNIQUE
_ELF_VISIBILITIES = (DEFAULT, INTERNAL, HIDDEN, PROTECTED)
# (kind, binding, visibility) by ``st_info | (st_other & 3) << 8``: one lookup per symbol.
_ELF_ATTRIBUTES = tuple(
    (_ELF_KINDS.get(info & 0xF, OTHER), _ELF_BINDINGS.get(info >> 4, GLOBAL), _ELF_VISIBILITIES[other])
    for other in range(4)
    for info in range(256)
)


class _Section(NamedTuple):
    type: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


class ElfLayout(NamedTuple):
    """An ELF image's header, section headers and dynamic entries: what its symbols are read with."""

    bits: int
    end: str  # struct byte order: "<" or ">"
    shared: bool
    sections: list[_Section]
    needed: tuple[str, ...]
    soname: str | None
    runpath: tuple[str, ...]
    rpath: tuple[str, ...]


def elf_layout(data: bytes | mmap.mmap, path: str) -> ElfLayout:
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise FormatError(f"{path}: bad ELF class/data bytes {ei_class}/{ei_data}")
    bits = 64 if ei_class == 2 else 32
    end = "<" if ei_data == 1 else ">"
    if bits == 64:
        (_, e_type, _, _, _, _, e_shoff, _, _, _, _, e_shentsize, e_shnum, _) = struct.unpack_from(
            end + "16sHHIQQQIHHHHHH", data, 0
        )
        shdr = struct.Struct(end + "IIQQQQIIQQ")
    else:
        (_, e_type, _, _, _, _, e_shoff, _, _, _, _, e_shentsize, e_shnum, _) = struct.unpack_from(
            end + "16sHHIIIIIHHHHHH", data, 0
        )
        shdr = struct.Struct(end + "IIIIIIIIII")

    sections: list[_Section] = []
    if e_shoff:
        if e_shnum == 0:  # more than 0xff00 sections: the real count is in section 0
            e_shnum = shdr.unpack_from(data, e_shoff)[5]
        for i in range(e_shnum):
            _, sh_type, _, _, sh_offset, sh_size, sh_link, sh_info, _, sh_entsize = shdr.unpack_from(
                data, e_shoff + i * e_shentsize
            )
            sections.append(_Section(sh_type, sh_offset, sh_size, sh_link, sh_info, sh_entsize))

    # Dynamic section: needed libraries, soname, search paths.
    needed: list[str] = []
    soname = None
    runpath: list[str] = []
    rpath: list[str] = []
    for s in sections:
        if s.type != _SHT_DYNAMIC:
            continue
        dynstr = section_bytes(data, sections, s.link)
        dyn = struct.Struct(end + ("qQ" if bits == 64 else "iI"))
        raw = data[s.offset : s.offset + s.size - s.size % dyn.size]
        for tag, value in dyn.iter_unpack(raw):
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(_cstr(dynstr, value))
            elif tag == _DT_SONAME:
                soname = _cstr(dynstr, value)
            elif tag == _DT_RUNPATH:
                runpath.extend(p for p in _cstr(dynstr, value).split(":") if p)
            elif tag == _DT_RPATH:
                rpath.extend(p for p in _cstr(dynstr, value).split(":") if p)
    return ElfLayout(bits, end, e_type == 3, sections, tuple(needed), soname, tuple(runpath), tuple(rpath))


def section_bytes(data: bytes | mmap.mmap, sections: list[_Section], index: int) -> bytes:
    if not 0 < index < len(sections):
        return b""
    s = sections[index]
    return bytes(data[s.offset : s.offset + s.size])


def _parse_elf(data: bytes | mmap.mmap, path: str, dynamic: bool = True) -> SymbolTable:
    layout = elf_layout(data, path)
    sections, bits, end = layout.sections, layout.bits, layout.end
    symbols: list[Symbol] = []
    skip_dynamic = not dynamic and any(s.type == _SHT_SYMTAB for s in sections)
    for index, s in enumerate(sections):
        if s.type == _SHT_SYMTAB:
            table = STATIC
        elif s.type == _SHT_DYNSYM and not skip_dynamic:
            table = DYNAMIC
        else:
            continue
        versions = _elf_versions(data, sections, index, end) if table == DYNAMIC else None
        extended = _elf_extended_indices(data, sections, index, end)
        symbols.extend(
            _elf_symbols(data, s, section_bytes(data, sections, s.link), bits, end, table, versions, extended)
        )

    return SymbolTable(
        path=path,
        format=ELF,
        bits=bits,
        little_endian=end == "<",
        shared=layout.shared,
        symbols=tuple(symbols),
        needed=layout.needed,
        soname=layout.soname,
        runpath=layout.runpath,
        rpath=layout.rpath,
    )


def _cstr(table: bytes, offset: int) -> str:
    stop = table.find(b"\0", offset)
    raw = table[offset : stop if stop >= 0 else len(table)]
    return raw.decode("utf-8", "surrogateescape")


def _elf_symbols(
    data: bytes | mmap.mmap,
    s: _Section,
    strtab: bytes,
    bits: int,
    end: str,
    table: str,
    versions: list[str | None] | None,
    extended: list[int] | None,
) -> list[Symbol]:
    if bits == 64:
        entry = struct.Struct(end + "IBBHQQ")
    else:
        entry = struct.Struct(end + "IIIBBH")
    count = s.size // entry.size
    raw = data[s.offset : s.offset + count * entry.size]
    # Latin-1 maps bytes 1:1, so byte offsets stay valid; non-ASCII names are re-decoded below.
    # The appended NUL ends a last name that lacks one, so every lookup finds an end.
    names = strtab.decode("latin-1") + "\0"
    find = names.find
    ascii_only = strtab.isascii()
    attributes = _ELF_ATTRIBUTES
    out: list[Symbol] = []
    append = out.append
    new = tuple.__new__  # skips NamedTuple.__new__'s argument handling: measurably faster here
    rows: Iterator[tuple[int, ...]] = entry.iter_unpack(raw)
    next(rows, None)  # the null symbol
    if bits != 64:
        rows = ((n, info, other, shndx, value, size) for n, value, size, info, other, shndx in rows)
    # One version per symbol after the null one, None past the end of the list.
    version_of: Iterator[str | None] = itertools.repeat(None)
    if versions is not None:
        version_of = itertools.chain(itertools.islice(versions, 1, None), version_of)
    for (st_name, st_info, st_other, st_shndx, st_value, st_size), version in zip(rows, version_of):
        name = names[st_name : find("\0", st_name)]
        if not ascii_only and not name.isascii():
            name = name.encode("latin-1").decode("utf-8", "surrogateescape")
        kind, binding, visibility = attributes[st_info | (st_other & 3) << 8]
        append(
            new(
                Symbol,
                (
                    name,
                    normalise_name(name) if ".llvm." in name else name,
                    st_value,
                    st_size,
                    kind,
                    binding,
                    visibility,
                    st_shndx != _SHN_UNDEF,
                    st_shndx,
                    table,
                    version,
                ),
            )
        )
    if extended is not None:  # more sections than 16 bits count: the real indices are apart
        for i, symbol in enumerate(out, 1):
            if symbol.section_index == _SHN_XINDEX and i < len(extended):
                out[i - 1] = symbol._replace(section_index=extended[i], defined=extended[i] != _SHN_UNDEF)
    return out


def _elf_extended_indices(
    data: bytes | mmap.mmap, sections: list[_Section], symtab_index: int, end: str
) -> list[int] | None:
    for s in sections:
        if s.type == _SHT_SYMTAB_SHNDX and s.link == symtab_index:
            return [v for (v,) in struct.iter_unpack(end + "I", data[s.offset : s.offset + s.size - s.size % 4])]
    return None


def _elf_versions(
    data: bytes | mmap.mmap, sections: list[_Section], dynsym_index: int, end: str
) -> list[str | None] | None:
    """Version name per dynamic symbol, from .gnu.version plus .gnu.version_d/_r."""
    versym = next((s for s in sections if s.type == _SHT_GNU_VERSYM and s.link == dynsym_index), None)
    if versym is None:
        return None
    names: dict[int, str] = {}
    for s in sections:
        if s.type == _SHT_GNU_VERDEF:
            strtab = bytes(data[sections[s.link].offset : sections[s.link].offset + sections[s.link].size])
            offset = s.offset
            for _ in range(s.info):
                _, flags, ndx, cnt, _, aux, next_ = struct.unpack_from(end + "HHHHIII", data, offset)
                if cnt and not flags & 1:  # VER_FLG_BASE names the file itself
                    (vda_name, _) = struct.unpack_from(end + "II", data, offset + aux)
                    names[ndx] = _cstr(strtab, vda_name)
                if not next_:
                    break
                offset += next_
        elif s.type == _SHT_GNU_VERNEED:
            strtab = bytes(data[sections[s.link].offset : sections[s.link].offset + sections[s.link].size])
            offset = s.offset
            for _ in range(s.info):
                _, cnt, _, aux, next_ = struct.unpack_from(end + "HHIII", data, offset)
                aux_offset = offset + aux
                for _ in range(cnt):
                    _, _, other, vna_name, vna_next = struct.unpack_from(end + "IHHII", data, aux_offset)
                    names[other] = _cstr(strtab, vna_name)
                    if not vna_next:
                        break
                    aux_offset += vna_next
                if not next_:
                    break
                offset += next_
    raw = data[versym.offset : versym.offset + versym.size - versym.size % 2]
    return [names.get(v & 0x7FFF) for (v,) in struct.iter_unpack(end + "H", raw)]


# --- Mach-O (64-bit) ---------------------------------------------------------------------

_LC_REQ_DYLD = 0x80000000
_LC_SYMTAB = 0x2
_LC_SEGMENT_64 = 0x19
_LC_LOAD_DYLIB = 0xC
_LC_ID_DYLIB = 0xD
_LC_LOAD_WEAK_DYLIB = 0x18 | _LC_REQ_DYLD
_LC_REEXPORT_DYLIB = 0x1F | _LC_REQ_DYLD
_LC_LAZY_LOAD_DYLIB = 0x20
_LC_LOAD_UPWARD_DYLIB = 0x23 | _LC_REQ_DYLD
_LC_RPATH = 0x1C | _LC_REQ_DYLD
_LOAD_DYLIB_COMMANDS = {
    _LC_LOAD_DYLIB,
    _LC_LOAD_WEAK_DYLIB,
    _LC_REEXPORT_DYLIB,
    _LC_LAZY_LOAD_DYLIB,
    _LC_LOAD_UPWARD_DYLIB,
}

_N_STAB = 0xE0
_N_PEXT = 0x10
_N_TYPE = 0x0E
_N_EXT = 0x01
_N_UNDF = 0x0
_N_SECT = 0xE
_N_WEAK_REF = 0x40
_N_WEAK_DEF = 0x80

_S_THREAD_LOCAL_TYPES = {0x11, 0x12, 0x13, 0x14, 0x15}  # TLV regular/zerofill/variables/pointers/init
_S_ATTR_PURE_INSTRUCTIONS = 0x80000000
_S_ATTR_SOME_INSTRUCTIONS = 0x00000400

_MH_DYLIB = 0x6
_MH_BUNDLE = 0x8


class _MachSection(NamedTuple):
    address: int
    size: int
    kind: str


# A Mach-O symbol before its size is known: name, value, kind, binding, visibility, defined, n_sect.
_PendingSymbol = tuple[str, int, str, str, str, bool, int]


def _parse_macho64(data: bytes | mmap.mmap, path: str) -> SymbolTable:
    end = "<" if bytes(data[:4]) == b"\xcf\xfa\xed\xfe" else ">"
    _, _, _, filetype, ncmds, _, _, _ = struct.unpack_from(end + "IiiIIIII", data, 0)
    offset = 32
    sections: list[_MachSection] = []  # index 0 is n_sect 1
    needed: list[str] = []
    rpaths: list[str] = []
    soname = None
    symtab = None
    for _ in range(ncmds):
        cmd, cmdsize = struct.unpack_from(end + "II", data, offset)
        if cmd == _LC_SYMTAB:
            symtab = struct.unpack_from(end + "IIII", data, offset + 8)
        elif cmd == _LC_SEGMENT_64:
            nsects = struct.unpack_from(end + "I", data, offset + 64)[0]
            for i in range(nsects):
                base = offset + 72 + i * 80
                sectname, segname, addr, size, _, _, _, _, flags = struct.unpack_from(end + "16s16sQQIIIII", data, base)
                sections.append(_MachSection(addr, size, _macho_section_kind(segname, sectname, flags)))
        elif cmd in _LOAD_DYLIB_COMMANDS or cmd == _LC_ID_DYLIB:
            name_offset = struct.unpack_from(end + "I", data, offset + 8)[0]
            name = _cstr(bytes(data[offset + name_offset : offset + cmdsize]), 0)
            if cmd == _LC_ID_DYLIB:
                soname = name
            else:
                needed.append(name)
        elif cmd == _LC_RPATH:
            path_offset = struct.unpack_from(end + "I", data, offset + 8)[0]
            rpaths.append(_cstr(bytes(data[offset + path_offset : offset + cmdsize]), 0))
        offset += cmdsize

    symbols: list[Symbol] = []
    if symtab is not None:
        symoff, nsyms, stroff, strsize = symtab
        strtab = bytes(data[stroff : stroff + strsize])
        raw = data[symoff : symoff + nsyms * 16]
        pending: list[_PendingSymbol] = []
        for n_strx, n_type, n_sect, n_desc, n_value in struct.iter_unpack(end + "IBBHQ", raw):
            if n_type & _N_STAB:
                continue  # debugger entries, not symbols
            name = _cstr(strtab, n_strx) if n_strx else ""
            kind_bits = n_type & _N_TYPE
            defined = kind_bits != _N_UNDF
            if n_type & _N_EXT:
                binding = WEAK if n_desc & (_N_WEAK_DEF | _N_WEAK_REF) else GLOBAL
            else:
                binding = LOCAL
            kind = OTHER
            if kind_bits == _N_SECT and 0 < n_sect <= len(sections):
                kind = sections[n_sect - 1].kind
            elif not defined:
                kind = OTHER
            pending.append(
                (name, n_value, kind, binding, HIDDEN if n_type & _N_PEXT else DEFAULT, defined, n_sect)
            )
        sizes = _macho_sizes(pending, sections)
        for (name, value, kind, binding, visibility, defined, sect), size in zip(pending, sizes):
            symbols.append(
                Symbol(name, normalise_name(name), value, size, kind, binding, visibility, defined, sect, STATIC)
            )

    return SymbolTable(
        path=path,
        format=MACHO,
        bits=64,
        little_endian=end == "<",
        shared=filetype in (_MH_DYLIB, _MH_BUNDLE),
        symbols=tuple(symbols),
        needed=tuple(needed),
        soname=soname,
        runpath=tuple(rpaths),
    )


def _macho_section_kind(segname: bytes, sectname: bytes, flags: int) -> str:
    if (flags & 0xFF) in _S_THREAD_LOCAL_TYPES:
        return TLS
    if flags & (_S_ATTR_PURE_INSTRUCTIONS | _S_ATTR_SOME_INSTRUCTIONS):
        return FUNCTION
    if segname.rstrip(b"\0") == b"__TEXT" and sectname.rstrip(b"\0") == b"__text":
        return FUNCTION
    return DATA


def _macho_sizes(pending: list[_PendingSymbol], sections: list[_MachSection]) -> list[int]:
    """Mach-O symbols carry no size: use the distance to the next symbol in the same section."""
    sizes = [0] * len(pending)
    by_section: dict[int, list[tuple[int, int]]] = {}
    for i, (_, value, _, _, _, defined, sect) in enumerate(pending):
        if defined and 0 < sect <= len(sections):
            by_section.setdefault(sect, []).append((value, i))
    for sect, entries in by_section.items():
        entries.sort()
        section_end = sections[sect - 1].address + sections[sect - 1].size
        addresses = [*sorted({value for value, _ in entries}), section_end]
        following = dict(itertools.pairwise(addresses))
        for value, i in entries:
            sizes[i] = max(0, following.get(value, section_end) - value)
    return sizes
