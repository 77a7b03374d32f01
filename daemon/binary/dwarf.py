"""A small DWARF reader: the debug information entries of an object's compile units, and
its line programs' file tables (versions 4 and 5, 32-bit format).

It reads what layout checks and change lists need (types, members, functions and where they
are declared), nothing about locations or line rows. ``read_units(obj)`` takes an
``ElfObject``; relocatable objects are read with their relocations applied.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from daemon.binary.elf_objects import ElfObject

# Tags
TAG_ARRAY = 0x01
TAG_ENUMERATION = 0x04
TAG_FORMAL_PARAMETER = 0x05
TAG_LEXICAL_BLOCK = 0x0B
TAG_MEMBER = 0x0D
TAG_POINTER = 0x0F
TAG_REFERENCE = 0x10
TAG_COMPILE_UNIT = 0x11
TAG_STRUCTURE = 0x13
TAG_SUBROUTINE_TYPE = 0x15
TAG_TYPEDEF = 0x16
TAG_UNION = 0x17
TAG_VARIANT = 0x19
TAG_INLINED_SUBROUTINE = 0x1D
TAG_SUBRANGE = 0x21
TAG_BASE = 0x24
TAG_CONST = 0x26
TAG_ENUMERATOR = 0x28
TAG_SUBPROGRAM = 0x2E
TAG_TEMPLATE_TYPE_PARAM = 0x2F
TAG_VARIANT_PART = 0x33
TAG_VARIABLE = 0x34
TAG_NAMESPACE = 0x39

# Attributes
AT_NAME = 0x03
AT_BYTE_SIZE = 0x0B
AT_STMT_LIST = 0x10
AT_DISCR = 0x15
AT_DISCR_VALUE = 0x16
AT_COMP_DIR = 0x1B
AT_CONST_VALUE = 0x1C
AT_UPPER_BOUND = 0x2F
AT_ABSTRACT_ORIGIN = 0x31
AT_COUNT = 0x37
AT_DATA_MEMBER_LOCATION = 0x38
AT_DECL_FILE = 0x3A
AT_DECL_LINE = 0x3B
AT_DECLARATION = 0x3C
AT_SPECIFICATION = 0x47
AT_TYPE = 0x49
AT_LINKAGE_NAME = 0x6E
AT_STR_OFFSETS_BASE = 0x72
AT_ALIGNMENT = 0x88
AT_MIPS_LINKAGE_NAME = 0x2007

_REFERENCE_FORMS = {0x11, 0x12, 0x13, 0x14, 0x15}  # ref1/2/4/8/udata: offsets within the unit
_FIXED = {0x01: -1, 0x05: 2, 0x06: 4, 0x07: 8, 0x0B: 1, 0x0C: 1, 0x0E: 4, 0x10: 4, 0x11: 1, 0x12: 2, 0x13: 4,
          0x14: 8, 0x17: 4, 0x19: 0, 0x1C: 4, 0x1D: 4, 0x1E: 16, 0x1F: 4, 0x20: 8, 0x21: 0, 0x24: 8, 0x25: 1,
          0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1, 0x2A: 2, 0x2B: 3, 0x2C: 4}  # fmt: skip


class DwarfError(ValueError):
    """Debug information this reader can't follow (says what)."""


@dataclass(eq=False)
class Die:
    offset: int  # in .debug_info
    tag: int
    attrs: dict[int, object]
    parent: Die | None = None
    children: list[Die] = field(default_factory=list)

    def name(self) -> str | None:
        value = self.attrs.get(AT_NAME)
        return value if isinstance(value, str) else None

    def number(self, attr: int) -> int | None:
        value = self.attrs.get(attr)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(eq=False)
class Unit:
    offset: int
    version: int
    root: Die
    dies: dict[int, Die]  # by offset in .debug_info
    files: list[str]  # the line program's file table: DW_AT_decl_file indexes it

    def ref(self, die: Die, attr: int) -> Die | None:
        value = die.attrs.get(attr)
        return self.dies.get(value.offset) if isinstance(value, Ref) else None


@dataclass(frozen=True)
class Ref:
    offset: int  # absolute, in .debug_info


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, pos


def _cstr(data: bytes, pos: int) -> str:
    end = data.find(b"\0", pos)
    return data[pos : end if end >= 0 else len(data)].decode("utf-8", "replace")


Abbrev = tuple[int, bool, tuple[tuple[int, int, int], ...]]  # tag, has children, (attr, form, implicit)


def _abbrevs(data: bytes, pos: int) -> dict[int, Abbrev]:
    table: dict[int, Abbrev] = {}
    while pos < len(data):
        code, pos = _uleb(data, pos)
        if code == 0:
            break
        tag, pos = _uleb(data, pos)
        children = data[pos] == 1
        pos += 1
        specs = []
        while True:
            attr, pos = _uleb(data, pos)
            form, pos = _uleb(data, pos)
            implicit = 0
            if form == 0x21:
                implicit, pos = _sleb(data, pos)
            if attr == 0 and form == 0:
                break
            specs.append((attr, form, implicit))
        table[code] = (tag, children, tuple(specs))
    return table


@dataclass
class _Sections:
    info: bytes
    abbrev: bytes
    strs: bytes
    line_strs: bytes
    str_offsets: bytes
    line: bytes


def _sections(obj: ElfObject) -> _Sections | None:
    info = obj.relocated(".debug_info")
    abbrev = obj.relocated(".debug_abbrev")
    if not info or abbrev is None:
        return None
    return _Sections(
        info,
        abbrev,
        obj.relocated(".debug_str") or b"",
        obj.relocated(".debug_line_str") or b"",
        obj.relocated(".debug_str_offsets") or b"",
        obj.relocated(".debug_line") or b"",
    )


def has_debug_info(obj: ElfObject) -> bool:
    section = obj.section_named(".debug_info")
    return section is not None and section.size > 0


def read_units(obj: ElfObject) -> list[Unit]:
    """Every compile unit of ``obj`` with its whole tree of entries ([] without debug info)."""
    sections = _sections(obj)
    if sections is None:
        return []
    units = []
    pos = 0
    info = sections.info
    while pos + 11 <= len(info):
        (length,) = struct.unpack_from("<I", info, pos)
        if length >= 0xFFFFFFF0:
            raise DwarfError(f"{obj.path}: 64-bit DWARF is not read")
        end = pos + 4 + length
        units.append(_unit(sections, pos, end))
        pos = end
    return units


def _unit(s: _Sections, start: int, end: int) -> Unit:
    info = s.info
    (version,) = struct.unpack_from("<H", info, start + 4)
    if version >= 5:
        unit_type, address_size = info[start + 6], info[start + 7]
        (abbrev_offset,) = struct.unpack_from("<I", info, start + 8)
        pos = start + 12
        if unit_type in (2, 6):  # type and split units carry a signature and an offset
            pos += 12
        elif unit_type in (4, 5):
            pos += 8
    elif version in (2, 3, 4):
        (abbrev_offset,) = struct.unpack_from("<I", info, start + 6)
        address_size = info[start + 10]
        pos = start + 11
    else:
        raise DwarfError(f"DWARF version {version} is not read")
    abbrevs = _abbrevs(s.abbrev, abbrev_offset)
    dies: dict[int, Die] = {}
    stack: list[Die] = []
    root: Die | None = None
    str_offsets_base = 8
    pending_strx: list[tuple[Die, int, int]] = []
    while pos < end:
        offset = pos
        code, pos = _uleb(info, pos)
        if code == 0:
            if stack:
                stack.pop()
            continue
        abbrev = abbrevs.get(code)
        if abbrev is None:
            raise DwarfError(f"unknown abbreviation {code} at {offset:#x}")
        tag, has_children, specs = abbrev
        attrs: dict[int, object] = {}
        die = Die(offset, tag, attrs, stack[-1] if stack else None)
        for attr, form, implicit in specs:
            if form == 0x16:  # indirect
                form, pos = _uleb(info, pos)
            value: object
            if form in (0x0E, 0x1F):  # strp, line_strp
                (ptr,) = struct.unpack_from("<I", info, pos)
                pos += 4
                value = _cstr(s.strs if form == 0x0E else s.line_strs, ptr)
            elif form == 0x08:  # string
                stop = info.index(b"\0", pos)
                value = info[pos:stop].decode("utf-8", "replace")
                pos = stop + 1
            elif form in _REFERENCE_FORMS:
                if form == 0x15:
                    raw, pos = _uleb(info, pos)
                else:
                    width = _FIXED[form]
                    raw = int.from_bytes(info[pos : pos + width], "little")
                    pos += width
                value = Ref(start + raw)
            elif form == 0x10:  # ref_addr: from the section start
                (raw,) = struct.unpack_from("<I", info, pos)
                pos += 4
                value = Ref(raw)
            elif form in (0x0F, 0x15, 0x1A, 0x1B, 0x22, 0x23):  # udata, strx, addrx, loclistx, rnglistx
                value, pos = _uleb(info, pos)
                if form == 0x1A:
                    pending_strx.append((die, attr, int(value)))
            elif form in (0x25, 0x26, 0x27, 0x28):  # strx1..4
                width = _FIXED[form]
                index = int.from_bytes(info[pos : pos + width], "little")
                pos += width
                pending_strx.append((die, attr, index))
                value = index
            elif form == 0x0D:
                value, pos = _sleb(info, pos)
            elif form in (0x0B, 0x05, 0x06, 0x07, 0x0C, 0x17, 0x29, 0x2A, 0x2B, 0x2C, 0x1C, 0x1D, 0x24, 0x20):
                width = _FIXED[form]
                value = int.from_bytes(info[pos : pos + width], "little")
                pos += width
            elif form == 0x01:
                value = int.from_bytes(info[pos : pos + address_size], "little")
                pos += address_size
            elif form == 0x19:
                value = True
            elif form == 0x21:
                value = implicit
            elif form in (0x18, 0x09):  # exprloc, block
                size, pos = _uleb(info, pos)
                value = info[pos : pos + size]
                pos += size
            elif form in (0x0A, 0x03, 0x04):  # block1/2/4
                width = {0x0A: 1, 0x03: 2, 0x04: 4}[form]
                size = int.from_bytes(info[pos : pos + width], "little")
                pos += width
                value = info[pos : pos + size]
                pos += size
            elif form == 0x1E:
                value = info[pos : pos + 16]
                pos += 16
            else:
                raise DwarfError(f"unknown attribute form {form:#x} at {offset:#x}")
            attrs[attr] = value
        dies[offset] = die
        if stack:
            stack[-1].children.append(die)
        else:
            root = die
            base = die.number(AT_STR_OFFSETS_BASE)
            if base is not None:
                str_offsets_base = base
        if has_children:
            stack.append(die)
    if root is None:
        raise DwarfError(f"an empty compile unit at {start:#x}")
    for die, attr, index in pending_strx:
        at = str_offsets_base + 4 * index
        if at + 4 <= len(s.str_offsets):
            (ptr,) = struct.unpack_from("<I", s.str_offsets, at)
            die.attrs[attr] = _cstr(s.strs, ptr)
    stmt = root.number(AT_STMT_LIST)
    files = _file_table(s, stmt, root.attrs.get(AT_COMP_DIR)) if stmt is not None else []
    return Unit(start, version, root, dies, files)


def _file_table(s: _Sections, offset: int, comp_dir: object) -> list[str]:
    """File names of the line program at ``offset``, as DW_AT_decl_file indexes them."""
    data = s.line
    if offset + 10 > len(data):
        return []
    (length,) = struct.unpack_from("<I", data, offset)
    (version,) = struct.unpack_from("<H", data, offset + 4)
    base = str(comp_dir) if isinstance(comp_dir, str) else ""
    if version >= 5:
        pos = offset + 6 + 2  # address_size, seg_sel_size
        pos += 4  # header_length
        opcode_base = data[pos + 5]
        pos += 6 + (opcode_base - 1)

        def entries(pos: int) -> tuple[list[dict[int, object]], int]:
            count = data[pos]
            pos += 1
            formats = []
            for _ in range(count):
                kind, pos = _uleb(data, pos)
                form, pos = _uleb(data, pos)
                formats.append((kind, form))
            number, pos = _uleb(data, pos)
            rows = []
            for _ in range(number):
                row: dict[int, object] = {}
                for kind, form in formats:
                    if form == 0x1F:
                        (ptr,) = struct.unpack_from("<I", data, pos)
                        pos += 4
                        row[kind] = _cstr(s.line_strs, ptr)
                    elif form == 0x0E:
                        (ptr,) = struct.unpack_from("<I", data, pos)
                        pos += 4
                        row[kind] = _cstr(s.strs, ptr)
                    elif form == 0x08:
                        stop = data.index(b"\0", pos)
                        row[kind] = data[pos:stop].decode("utf-8", "replace")
                        pos = stop + 1
                    elif form in (0x0F,):
                        row[kind], pos = _uleb(data, pos)
                    elif form == 0x1E:
                        pos += 16
                    elif form in _FIXED and _FIXED[form] >= 0:
                        pos += _FIXED[form]
                    else:
                        raise DwarfError(f"line table form {form:#x} is not read")
                rows.append(row)
            return rows, pos

        directories, pos = entries(pos)
        names, pos = entries(pos)
        dirs = [str(d.get(1, "")) for d in directories]
        out = []
        for row in names:
            index = row.get(2, 0)
            folder = dirs[index] if isinstance(index, int) and index < len(dirs) else ""
            out.append(_join(base, folder, str(row.get(1, ""))))
        return out
    pos = offset + 4 + 2 + 4  # unit_length, version, header_length
    minimum_instruction = 4 if version >= 4 else 3  # min_inst_length, (max_ops,) default_is_stmt, line_base, range
    opcode_base = data[pos + minimum_instruction + 1]
    pos += minimum_instruction + 2 + (opcode_base - 1)
    folders = []
    while data[pos] != 0:
        text = _cstr(data, pos)
        folders.append(text)
        pos += len(text.encode()) + 1
    pos += 1
    files = [""]  # DWARF 4 numbers files from 1
    while pos < offset + 4 + length and data[pos] != 0:
        name = _cstr(data, pos)
        pos += len(name.encode()) + 1
        directory, pos = _uleb(data, pos)
        _, pos = _uleb(data, pos)  # modification time
        _, pos = _uleb(data, pos)  # length
        files.append(_join(base, folders[directory - 1] if 0 < directory <= len(folders) else "", name))
    return files


def _join(base: str, folder: str, name: str) -> str:
    if name.startswith("/"):
        return name
    if folder.startswith("/"):
        return f"{folder}/{name}"
    parts = [p for p in (base, folder, name) if p]
    return "/".join(parts)


def walk(die: Die) -> Iterator[Die]:
    """``die`` and every entry under it, depth first."""
    stack = [die]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))
