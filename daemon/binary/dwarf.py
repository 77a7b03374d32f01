"""DWARF debugging information, read by hand: as much as type layouts and function facts need.

It reads ``.debug_abbrev``, ``.debug_info``, ``.debug_str``, ``.debug_line_str``,
``.debug_str_offsets`` and the file table of ``.debug_line``, DWARF versions 2 to 5, 32- and
64-bit DWARF. rustc 1.95 writes DWARF 4 on Linux by default and DWARF 5 with
``-C dwarf-version=5`` (``DW_FORM_strx*``, ``DW_FORM_line_strp``, unit types). Relocatable
objects' absolute relocations are applied as a linker would (``ElfObject.relocated`` for the
small sections; for ``.debug_info``, value by value as DIEs are decoded), so
``DW_FORM_strp`` offsets and the like hold their final values.

A ``Unit`` is read in two steps. ``Unit.scan()`` walks every DIE once and keeps only its
offset, tag and parent, skipping attribute values without decoding them (an abbreviation whose
forms all have a fixed size is skipped in one step). ``Unit.die(offset)`` then decodes the
attributes of one DIE on demand. Nothing here knows about Rust; ``daemon.analysis.layout``
does.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.binary.elf_objects import EM_AARCH64, EM_X86_64, SHT_RELA, STT_SECTION, ElfObject, Section

# Absolute relocations in debug sections, by machine: type → width (as elf_objects applies them).
_ABSOLUTE_WIDTHS = {
    EM_X86_64: {1: 8, 10: 4, 11: 4},  # R_X86_64_64, _32, _32S
    EM_AARCH64: {257: 8, 258: 4},  # R_AARCH64_ABS64, _ABS32
}

# Tags
DW_TAG_array_type = 0x01
DW_TAG_enumeration_type = 0x04
DW_TAG_formal_parameter = 0x05
DW_TAG_lexical_block = 0x0B
DW_TAG_member = 0x0D
DW_TAG_pointer_type = 0x0F
DW_TAG_reference_type = 0x10
DW_TAG_compile_unit = 0x11
DW_TAG_structure_type = 0x13
DW_TAG_subroutine_type = 0x15
DW_TAG_typedef = 0x16
DW_TAG_union_type = 0x17
DW_TAG_variant = 0x19
DW_TAG_inlined_subroutine = 0x1D
DW_TAG_subrange_type = 0x21
DW_TAG_base_type = 0x24
DW_TAG_const_type = 0x26
DW_TAG_enumerator = 0x28
DW_TAG_subprogram = 0x2E
DW_TAG_template_type_param = 0x2F
DW_TAG_variable = 0x34
DW_TAG_volatile_type = 0x35
DW_TAG_namespace = 0x39
DW_TAG_unspecified_type = 0x3B
DW_TAG_partial_unit = 0x3C
DW_TAG_rvalue_reference_type = 0x42
DW_TAG_variant_part = 0x33

# Attributes
DW_AT_sibling = 0x01
DW_AT_location = 0x02
DW_AT_name = 0x03
DW_AT_byte_size = 0x0B
DW_AT_stmt_list = 0x10
DW_AT_const_value = 0x1C
DW_AT_upper_bound = 0x2F
DW_AT_abstract_origin = 0x31
DW_AT_count = 0x37
DW_AT_data_member_location = 0x38
DW_AT_decl_file = 0x3A
DW_AT_decl_line = 0x3B
DW_AT_declaration = 0x3C
DW_AT_encoding = 0x3E
DW_AT_external = 0x3F
DW_AT_specification = 0x47
DW_AT_type = 0x49
DW_AT_discr = 0x15
DW_AT_discr_value = 0x16
DW_AT_comp_dir = 0x1B
DW_AT_artificial = 0x34
DW_AT_linkage_name = 0x6E
DW_AT_MIPS_linkage_name = 0x2007
DW_AT_alignment = 0x88
DW_AT_str_offsets_base = 0x72

DW_ATE_signed = 0x05
DW_ATE_signed_char = 0x06

# Forms
DW_FORM_addr = 0x01
DW_FORM_block2 = 0x03
DW_FORM_block4 = 0x04
DW_FORM_data2 = 0x05
DW_FORM_data4 = 0x06
DW_FORM_data8 = 0x07
DW_FORM_string = 0x08
DW_FORM_block = 0x09
DW_FORM_block1 = 0x0A
DW_FORM_data1 = 0x0B
DW_FORM_flag = 0x0C
DW_FORM_sdata = 0x0D
DW_FORM_strp = 0x0E
DW_FORM_udata = 0x0F
DW_FORM_ref_addr = 0x10
DW_FORM_ref1 = 0x11
DW_FORM_ref2 = 0x12
DW_FORM_ref4 = 0x13
DW_FORM_ref8 = 0x14
DW_FORM_ref_udata = 0x15
DW_FORM_indirect = 0x16
DW_FORM_sec_offset = 0x17
DW_FORM_exprloc = 0x18
DW_FORM_flag_present = 0x19
DW_FORM_strx = 0x1A
DW_FORM_addrx = 0x1B
DW_FORM_ref_sup4 = 0x1C
DW_FORM_strp_sup = 0x1D
DW_FORM_data16 = 0x1E
DW_FORM_line_strp = 0x1F
DW_FORM_ref_sig8 = 0x20
DW_FORM_implicit_const = 0x21
DW_FORM_loclistx = 0x22
DW_FORM_rnglistx = 0x23
DW_FORM_ref_sup8 = 0x24
DW_FORM_strx1 = 0x25
DW_FORM_strx2 = 0x26
DW_FORM_strx3 = 0x27
DW_FORM_strx4 = 0x28
DW_FORM_addrx1 = 0x29
DW_FORM_addrx2 = 0x2A
DW_FORM_addrx3 = 0x2B
DW_FORM_addrx4 = 0x2C
DW_FORM_GNU_addr_index = 0x1F01
DW_FORM_GNU_str_index = 0x1F02
DW_FORM_GNU_ref_alt = 0x1F20
DW_FORM_GNU_strp_alt = 0x1F21

DW_UT_compile = 0x01
DW_UT_partial = 0x03

DW_OP_plus_uconst = 0x23
DW_OP_constu = 0x10

DW_LNCT_path = 0x1
DW_LNCT_directory_index = 0x2

# Skip codes for forms whose size is not fixed (fixed sizes are stored as their byte count).
_ULEB = -1
_BLOCK1 = -2
_BLOCK2 = -3
_BLOCK4 = -4
_BLOCK_ULEB = -5
_CSTRING = -6
_INDIRECT = -7

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_RELA_ENTRY = struct.Struct("<QQq")

Value = int | str | bytes | bool


class DwarfError(ValueError):
    """DWARF this reader cannot follow (says where)."""


def uleb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 at ``pos``: (value, position after it)."""
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def sleb(data: bytes, pos: int) -> tuple[int, int]:
    """A signed LEB128 at ``pos``: (value, position after it)."""
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, pos


def _cstring(data: bytes, pos: int) -> str:
    stop = data.find(b"\0", pos)
    if stop < 0:
        stop = len(data)
    return data[pos:stop].decode("utf-8", "surrogateescape")


def _form_size(form: int, address_size: int, offset_size: int) -> int:
    """The byte count of a fixed-size form, or one of the negative skip codes."""
    fixed = {
        DW_FORM_addr: address_size,
        DW_FORM_data1: 1,
        DW_FORM_ref1: 1,
        DW_FORM_flag: 1,
        DW_FORM_strx1: 1,
        DW_FORM_addrx1: 1,
        DW_FORM_data2: 2,
        DW_FORM_ref2: 2,
        DW_FORM_strx2: 2,
        DW_FORM_addrx2: 2,
        DW_FORM_strx3: 3,
        DW_FORM_addrx3: 3,
        DW_FORM_data4: 4,
        DW_FORM_ref4: 4,
        DW_FORM_strx4: 4,
        DW_FORM_addrx4: 4,
        DW_FORM_ref_sup4: 4,
        DW_FORM_data8: 8,
        DW_FORM_ref8: 8,
        DW_FORM_ref_sig8: 8,
        DW_FORM_ref_sup8: 8,
        DW_FORM_data16: 16,
        DW_FORM_strp: offset_size,
        DW_FORM_line_strp: offset_size,
        DW_FORM_sec_offset: offset_size,
        DW_FORM_strp_sup: offset_size,
        DW_FORM_GNU_ref_alt: offset_size,
        DW_FORM_GNU_strp_alt: offset_size,
        DW_FORM_flag_present: 0,
        DW_FORM_implicit_const: 0,
    }
    if form in fixed:
        return fixed[form]
    if form == DW_FORM_ref_addr:
        return offset_size
    if form in (
        DW_FORM_udata,
        DW_FORM_sdata,
        DW_FORM_ref_udata,
        DW_FORM_strx,
        DW_FORM_addrx,
        DW_FORM_loclistx,
        DW_FORM_rnglistx,
        DW_FORM_GNU_addr_index,
        DW_FORM_GNU_str_index,
    ):
        return _ULEB
    codes = {
        DW_FORM_block1: _BLOCK1,
        DW_FORM_block2: _BLOCK2,
        DW_FORM_block4: _BLOCK4,
        DW_FORM_block: _BLOCK_ULEB,
        DW_FORM_exprloc: _BLOCK_ULEB,
        DW_FORM_string: _CSTRING,
        DW_FORM_indirect: _INDIRECT,
    }
    if form in codes:
        return codes[form]
    raise DwarfError(f"unknown attribute form 0x{form:x}")


@dataclass(frozen=True)
class Abbrev:
    code: int
    tag: int
    has_children: bool
    attributes: tuple[tuple[int, int, int], ...]  # (DW_AT_*, DW_FORM_*, implicit constant)


def parse_abbrevs(data: bytes, offset: int) -> dict[int, Abbrev]:
    """The abbreviation table that starts at ``offset`` of ``.debug_abbrev``."""
    table: dict[int, Abbrev] = {}
    pos = offset
    while pos < len(data):
        code, pos = uleb(data, pos)
        if code == 0:
            break
        tag, pos = uleb(data, pos)
        has_children = data[pos] == 1
        pos += 1
        attributes: list[tuple[int, int, int]] = []
        while True:
            name, pos = uleb(data, pos)
            form, pos = uleb(data, pos)
            constant = 0
            if form == DW_FORM_implicit_const:
                constant, pos = sleb(data, pos)
            if name == 0 and form == 0:
                break
            attributes.append((name, form, constant))
        table[code] = Abbrev(code, tag, has_children, tuple(attributes))
    return table


class _Relocations:
    """A section's absolute relocations, looked up by offset (S + A, as ``ElfObject.relocated``).

    Only the offsets are taken out of the raw entries (in C, by slicing an array); an entry is
    decoded when a value at its offset is read. A large unit has tens of thousands of entries
    and a read needs a few hundred."""

    def __init__(self, obj: ElfObject, section: Section) -> None:
        self.symbols = obj.symbols
        self.widths = _ABSOLUTE_WIDTHS.get(obj.machine, {})
        self.entries: list[tuple[int, int, int]] | None = None  # (offset, info, addend), when decoded
        raws = obj.relocation_bytes(section)
        offsets: Sequence[int] = []
        if len(raws) == 1 and raws[0][0] == SHT_RELA and sys.byteorder == "little":
            raw = raws[0][1]
            self.raw = raw[: len(raw) - len(raw) % _RELA_ENTRY.size]
            offsets = array("Q", self.raw)[0::3]
            if list(offsets) != sorted(offsets):
                offsets = []  # out of order: decoded below
        if not offsets and any(raw for _, raw in raws):
            ordered = sorted(obj.relocations(section), key=lambda r: r.offset)
            self.entries = [(r.offset, r.type | (r.symbol << 32), r.addend) for r in ordered]
            offsets = [r.offset for r in ordered]
        self.offsets = offsets

    def __bool__(self) -> bool:
        return len(self.offsets) > 0

    def _entry(self, index: int) -> tuple[int, int, int]:
        if self.entries is not None:
            return self.entries[index]
        offset, info, addend = _RELA_ENTRY.unpack_from(self.raw, index * _RELA_ENTRY.size)
        return int(offset), int(info), int(addend)

    def value(self, pos: int, width: int) -> int | None:
        """The relocated ``width``-byte value at ``pos``, or None when no relocation applies."""
        index = bisect_left(self.offsets, pos)
        if index >= len(self.offsets) or self.offsets[index] != pos:
            return None
        _, info, addend = self._entry(index)
        if self.widths.get(info & 0xFFFFFFFF) != width:
            return None
        symbol_index = info >> 32
        symbol = self.symbols[symbol_index] if 0 < symbol_index < len(self.symbols) else None
        base = symbol.value if symbol is not None and symbol.type != STT_SECTION else 0
        return (base + addend) & ((1 << (8 * width)) - 1)


@dataclass
class Sections:
    """The DWARF sections of one ELF file, relocated when it is a relocatable object."""

    info: bytes
    abbrev: bytes
    str: bytes = b""
    line_str: bytes = b""
    str_offsets: bytes = b""
    line: bytes = b""
    # A relocatable object's .debug_info is kept as it is in the file; the few values a read
    # decodes are relocated one by one (``word``), which costs far less than relocating all.
    info_relocations: _Relocations | None = None
    _abbrev_tables: dict[int, dict[int, Abbrev]] = field(default_factory=dict)

    @classmethod
    def from_elf(cls, obj: ElfObject) -> Sections | None:
        """The object's DWARF, or None when it has no ``.debug_info`` (built without debug info)."""
        section = obj.section_named(".debug_info")
        abbrev = obj.relocated(".debug_abbrev")
        if section is None or not section.size or abbrev is None:
            return None
        relocations = _Relocations(obj, section)
        return cls(
            info=obj.section_data(section),
            info_relocations=relocations if relocations else None,
            abbrev=abbrev,
            str=obj.relocated(".debug_str") or b"",
            line_str=obj.relocated(".debug_line_str") or b"",
            str_offsets=obj.relocated(".debug_str_offsets") or b"",
            line=obj.relocated(".debug_line") or b"",
        )

    def word(self, pos: int, width: int) -> int:
        """The ``width``-byte value at ``pos`` of .debug_info, relocated."""
        if self.info_relocations is not None:
            value = self.info_relocations.value(pos, width)
            if value is not None:
                return value
        return int.from_bytes(self.info[pos : pos + width], "little")

    def abbrevs(self, offset: int) -> dict[int, Abbrev]:
        table = self._abbrev_tables.get(offset)
        if table is None:
            table = self._abbrev_tables[offset] = parse_abbrevs(self.abbrev, offset)
        return table

    def units(self) -> list[Unit]:
        """Every compile and partial unit of ``.debug_info``, headers read, DIEs not yet."""
        found: list[Unit] = []
        pos = 0
        while pos + 11 <= len(self.info):
            unit = Unit(self, pos)
            if unit.unit_type in (DW_UT_compile, DW_UT_partial):
                found.append(unit)
            if unit.end <= pos:
                break
            pos = unit.end
        return found


@dataclass
class Die:
    offset: int  # in .debug_info
    tag: int
    has_children: bool
    attributes: dict[int, Value]
    unit: Unit

    def get(self, attribute: int) -> Value | None:
        return self.attributes.get(attribute)

    @property
    def name(self) -> str | None:
        value = self.attributes.get(DW_AT_name)
        return value if isinstance(value, str) else None

    def number(self, attribute: int) -> int | None:
        value = self.attributes.get(attribute)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def ref(self, attribute: int) -> int | None:
        """A reference attribute as an offset into ``.debug_info``."""
        return self.number(attribute) if self.unit.is_reference(self, attribute) else None

    def children(self) -> list[Die]:
        return [self.unit.die(offset) for offset in self.unit.child_offsets(self.offset)]


_REFERENCE_FORMS = frozenset(
    {DW_FORM_ref1, DW_FORM_ref2, DW_FORM_ref4, DW_FORM_ref8, DW_FORM_ref_udata, DW_FORM_ref_addr}
)


class Unit:
    """One unit of ``.debug_info``: its header, and its DIEs once ``scan`` ran."""

    def __init__(self, sections: Sections, offset: int) -> None:
        data = sections.info
        self.sections = sections
        self.offset = offset
        length = _U32.unpack_from(data, offset)[0]
        pos = offset + 4
        self.offset_size = 4
        if length == 0xFFFFFFFF:
            length = _U64.unpack_from(data, pos)[0]
            pos += 8
            self.offset_size = 8
        self.end = pos + length
        self.version = _U16.unpack_from(data, pos)[0]
        pos += 2
        if not 2 <= self.version <= 5:
            raise DwarfError(f"DWARF version {self.version} at .debug_info+0x{offset:x}")
        if self.version >= 5:
            self.unit_type = data[pos]
            self.address_size = data[pos + 1]
            pos += 2
            self.abbrev_offset = self._offset(data, pos)
            pos += self.offset_size
            if self.unit_type in (2, 6):  # type units: signature and type offset
                pos += 8 + self.offset_size
            elif self.unit_type in (4, 5):  # skeleton and split units: the DWO id
                pos += 8
        else:
            self.unit_type = DW_UT_compile
            self.abbrev_offset = self._offset(data, pos)
            pos += self.offset_size
            self.address_size = data[pos]
            pos += 1
        self.die_start = pos
        self.abbrevs = sections.abbrevs(self.abbrev_offset)
        self._plans: dict[int, tuple[int, tuple[int, ...] | None, int]] = {}
        self._cache: dict[int, Die] = {}
        # Filled by scan(): DIE offsets in order, their tags, and each one's parent offset.
        self.offsets: list[int] = []
        self.tags: list[int] = []
        self.parents: dict[int, int] = {}
        self._ends: dict[int, int] = {}  # a DIE with children -> the index after its last descendant
        self._str_offsets_base: int | None = None
        self._forms: dict[int, dict[int, int]] = {}

    def _offset(self, data: bytes, pos: int) -> int:
        if self.offset_size == 8:
            return int(_U64.unpack_from(data, pos)[0])
        return int(_U32.unpack_from(data, pos)[0])

    def _plan(self, code: int) -> tuple[int, tuple[int, ...] | None, int]:
        """(tag, the steps that skip its attributes, or None when their size is fixed: that size)."""
        plan = self._plans.get(code)
        if plan is None:
            abbrev = self.abbrevs.get(code)
            if abbrev is None:
                raise DwarfError(f"abbreviation {code} missing in unit at .debug_info+0x{self.offset:x}")
            sizes = [_form_size(form, self.address_size, self.offset_size) for _, form, _ in abbrev.attributes]
            steps: list[int] = []  # in order: a fixed byte count (>= 0), or a skip code (< 0)
            for size in sizes:
                if size >= 0 and steps and steps[-1] >= 0:
                    steps[-1] += size
                elif size != 0:
                    steps.append(size)
            tagbits = abbrev.tag | (0x10000 if abbrev.has_children else 0)
            if all(step >= 0 for step in steps):
                plan = (tagbits, None, sum(steps))
            else:
                plan = (tagbits, tuple(steps), 0)
            self._plans[code] = plan
        return plan

    def scan(self) -> None:
        """Walk every DIE once: offsets, tags and parents, no attribute decoded."""
        if self.offsets:
            return
        data = self.sections.info
        pos = self.die_start
        end = self.end
        offsets = self.offsets
        tags = self.tags
        parents = self.parents
        ends = self._ends
        stack: list[int] = []
        parent = -1  # the innermost open DIE with children (-1: none)
        plans = self._plans
        add_offset = offsets.append
        add_tag = tags.append
        while pos < end:
            start = pos
            code = data[pos]
            pos += 1
            if code >= 0x80:
                code, pos = uleb(data, start)
            elif code == 0:
                if stack:
                    ends[stack.pop()] = len(offsets)
                    parent = stack[-1] if stack else -1
                continue
            plan = plans.get(code)
            if plan is None:
                plan = self._plan(code)
            tagbits, steps, fixed = plan
            if steps is None:
                pos += fixed
            else:
                for step in steps:
                    if step >= 0:
                        pos += step
                    elif step == _ULEB:
                        while data[pos] & 0x80:
                            pos += 1
                        pos += 1
                    elif step == _BLOCK_ULEB and data[pos] < 0x80:
                        pos += 1 + data[pos]
                    else:
                        pos = self._skip(data, pos, step)
            add_offset(start)
            add_tag(tagbits & 0xFFFF)
            if parent >= 0:
                parents[start] = parent
            if tagbits & 0x10000:
                stack.append(start)
                parent = start
        for unclosed in stack:  # a unit cut short: its open DIEs end with it
            ends[unclosed] = len(offsets)

    def _skip(self, data: bytes, pos: int, skip: int) -> int:
        if skip == _ULEB:
            while data[pos] & 0x80:
                pos += 1
            return pos + 1
        if skip == _BLOCK_ULEB:
            length, pos = uleb(data, pos)
            return pos + length
        if skip == _CSTRING:
            return data.index(b"\0", pos) + 1
        if skip == _BLOCK1:
            return pos + 1 + data[pos]
        if skip == _BLOCK2:
            return pos + 2 + int(_U16.unpack_from(data, pos)[0])
        if skip == _BLOCK4:
            return pos + 4 + int(_U32.unpack_from(data, pos)[0])
        form, pos = uleb(data, pos)  # DW_FORM_indirect
        size = _form_size(form, self.address_size, self.offset_size)
        return pos + size if size >= 0 else self._skip(data, pos, size)

    def child_offsets(self, offset: int) -> list[int]:
        """The direct children of the DIE at ``offset``, in order (each one's subtree skipped)."""
        self.scan()
        offsets = self.offsets
        index = bisect_left(offsets, offset)
        if index >= len(offsets) or offsets[index] != offset:
            return []
        end = self._ends.get(offset, index + 1)
        ends = self._ends
        children = []
        index += 1
        while index < end:
            child = offsets[index]
            children.append(child)
            index = ends.get(child, index + 1)
        return children

    def parent(self, offset: int) -> int | None:
        self.scan()
        return self.parents.get(offset)

    def root(self) -> Die:
        return self.die(self.die_start)

    def die(self, offset: int) -> Die:
        """The DIE at ``offset`` (in .debug_info) with its attributes decoded."""
        cached = self._cache.get(offset)
        if cached is not None:
            return cached
        data = self.sections.info
        code, pos = uleb(data, offset)
        abbrev = self.abbrevs.get(code)
        if abbrev is None:
            raise DwarfError(f"no DIE at .debug_info+0x{offset:x}")
        attributes: dict[int, Value] = {}
        forms: dict[int, int] = {}
        for name, form, constant in abbrev.attributes:
            value, pos, form = self._value(data, pos, form, constant)
            attributes[name] = value
            forms[name] = form
        die = Die(offset, abbrev.tag, abbrev.has_children, attributes, self)
        self._forms[offset] = forms
        self._cache[offset] = die
        return die

    def attribute(self, offset: int, attribute: int) -> Value | None:
        """One attribute of the DIE at ``offset``, the others skipped, not decoded."""
        cached = self._cache.get(offset)
        if cached is not None:
            return cached.attributes.get(attribute)
        data = self.sections.info
        code, pos = uleb(data, offset)
        abbrev = self.abbrevs.get(code)
        if abbrev is None:
            raise DwarfError(f"no DIE at .debug_info+0x{offset:x}")
        for name, form, constant in abbrev.attributes:
            if name == attribute:
                return self._value(data, pos, form, constant)[0]
            size = _form_size(form, self.address_size, self.offset_size)
            pos = pos + size if size >= 0 else self._skip(data, pos, size)
        return None

    def is_reference(self, die: Die, attribute: int) -> bool:
        return self._forms.get(die.offset, {}).get(attribute) in _REFERENCE_FORMS

    def _value(self, data: bytes, pos: int, form: int, constant: int) -> tuple[Value, int, int]:
        if form == DW_FORM_strp:
            return _cstring(self.sections.str, self.sections.word(pos, self.offset_size)), pos + self.offset_size, form
        if form == DW_FORM_ref4:
            return self.offset + int(_U32.unpack_from(data, pos)[0]), pos + 4, form
        if form in (DW_FORM_data1, DW_FORM_ref1, DW_FORM_flag):
            value: Value = data[pos]
            if form == DW_FORM_ref1:
                value = self.offset + data[pos]
            elif form == DW_FORM_flag:
                value = data[pos] != 0
            return value, pos + 1, form
        if form == DW_FORM_flag_present:
            return True, pos, form
        if form in (DW_FORM_data2, DW_FORM_ref2):
            number = int(_U16.unpack_from(data, pos)[0])
            return (self.offset + number if form == DW_FORM_ref2 else number), pos + 2, form
        if form == DW_FORM_data4:
            return int(_U32.unpack_from(data, pos)[0]), pos + 4, form
        if form in (DW_FORM_data8, DW_FORM_ref8, DW_FORM_ref_sig8):
            number = int(_U64.unpack_from(data, pos)[0])
            return (self.offset + number if form == DW_FORM_ref8 else number), pos + 8, form
        if form == DW_FORM_data16:
            return int.from_bytes(data[pos : pos + 16], "little"), pos + 16, form
        if form in (DW_FORM_udata, DW_FORM_ref_udata):
            number, pos = uleb(data, pos)
            return (self.offset + number if form == DW_FORM_ref_udata else number), pos, form
        if form == DW_FORM_sdata:
            number, pos = sleb(data, pos)
            return number, pos, form
        if form == DW_FORM_implicit_const:
            return constant, pos, form
        if form == DW_FORM_string:
            stop = data.index(b"\0", pos)
            return data[pos:stop].decode("utf-8", "surrogateescape"), stop + 1, form
        if form == DW_FORM_line_strp:
            at = self.sections.word(pos, self.offset_size)
            return _cstring(self.sections.line_str, at), pos + self.offset_size, form
        if form in (DW_FORM_strx, DW_FORM_strx1, DW_FORM_strx2, DW_FORM_strx3, DW_FORM_strx4, DW_FORM_GNU_str_index):
            if form in (DW_FORM_strx, DW_FORM_GNU_str_index):
                index, pos = uleb(data, pos)
            else:
                width = {DW_FORM_strx1: 1, DW_FORM_strx2: 2, DW_FORM_strx3: 3, DW_FORM_strx4: 4}[form]
                index = int.from_bytes(data[pos : pos + width], "little")
                pos += width
            return self._indexed_string(index), pos, form
        if form in (DW_FORM_ref_addr, DW_FORM_sec_offset, DW_FORM_strp_sup, DW_FORM_GNU_ref_alt, DW_FORM_GNU_strp_alt):
            width = self.address_size if form == DW_FORM_ref_addr and self.version == 2 else self.offset_size
            return self.sections.word(pos, width), pos + width, form
        if form == DW_FORM_addr:
            return self.sections.word(pos, self.address_size), pos + self.address_size, form
        if form in (DW_FORM_addrx1, DW_FORM_addrx2, DW_FORM_addrx3, DW_FORM_addrx4):
            width = form - DW_FORM_addrx1 + 1
            return int.from_bytes(data[pos : pos + width], "little"), pos + width, form
        if form in (DW_FORM_addrx, DW_FORM_loclistx, DW_FORM_rnglistx, DW_FORM_GNU_addr_index):
            number, pos = uleb(data, pos)
            return number, pos, form
        if form in (DW_FORM_ref_sup4,):
            return int(_U32.unpack_from(data, pos)[0]), pos + 4, form
        if form == DW_FORM_ref_sup8:
            return int(_U64.unpack_from(data, pos)[0]), pos + 8, form
        if form in (DW_FORM_block1, DW_FORM_block2, DW_FORM_block4, DW_FORM_block, DW_FORM_exprloc):
            if form == DW_FORM_block1:
                length, pos = data[pos], pos + 1
            elif form == DW_FORM_block2:
                length, pos = int(_U16.unpack_from(data, pos)[0]), pos + 2
            elif form == DW_FORM_block4:
                length, pos = int(_U32.unpack_from(data, pos)[0]), pos + 4
            else:
                length, pos = uleb(data, pos)
            return bytes(data[pos : pos + length]), pos + length, form
        if form == DW_FORM_indirect:
            actual, pos = uleb(data, pos)
            return self._value(data, pos, actual, constant)
        raise DwarfError(f"unknown attribute form 0x{form:x} at .debug_info+0x{pos:x}")

    def _indexed_string(self, index: int) -> str:
        if self._str_offsets_base is None:
            base = self._root_attribute(DW_AT_str_offsets_base)
            # Without the attribute, the one contribution's header is 8 bytes (16 in 64-bit DWARF).
            self._str_offsets_base = base if isinstance(base, int) else (16 if self.offset_size == 8 else 8)
        table = self.sections.str_offsets
        at = self._str_offsets_base + index * self.offset_size
        if at + self.offset_size > len(table):
            raise DwarfError(f"string index {index} beyond .debug_str_offsets")
        return _cstring(self.sections.str, self._offset(table, at))

    def _root_attribute(self, attribute: int) -> Value | None:
        """An attribute of the unit DIE, read without strings (which may need this very base)."""
        data = self.sections.info
        code, pos = uleb(data, self.die_start)
        abbrev = self.abbrevs.get(code)
        if abbrev is None:
            return None
        for name, form, constant in abbrev.attributes:
            if name == attribute:
                return self._value(data, pos, form, constant)[0]
            size = _form_size(form, self.address_size, self.offset_size)
            pos = pos + size if size >= 0 else self._skip(data, pos, size)
        return None

    def file_names(self) -> list[str | None]:
        """The line program's file table as paths, indexed as ``DW_AT_decl_file`` counts."""
        root = self.root()
        stmt_list = root.number(DW_AT_stmt_list)
        comp_dir = root.get(DW_AT_comp_dir)
        if stmt_list is None or not self.sections.line:
            return []
        return line_file_names(self.sections, stmt_list, comp_dir if isinstance(comp_dir, str) else "")


def _join(directory: str, name: str) -> str:
    if not directory or name.startswith("/"):
        return name
    return directory.rstrip("/") + "/" + name


def line_program_headers(data: bytes) -> tuple[bytes, ...]:
    """The header of each line program in ``.debug_line`` (its version, its directory and
    file tables: all but the line-number opcodes), as bytes (pure)."""
    headers: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        length = _U32.unpack_from(data, pos)[0]
        start, at, offset_size = pos, pos + 4, 4
        if length == 0xFFFFFFFF:
            length, at, offset_size = _U64.unpack_from(data, at)[0], at + 8, 8
        end = at + length
        version_at = at
        at += 2 + (2 if _U16.unpack_from(data, version_at)[0] >= 5 else 0)
        header_length = _U32.unpack_from(data, at)[0] if offset_size == 4 else _U64.unpack_from(data, at)[0]
        headers.append(data[start : min(end, at + offset_size + header_length)])
        if end <= pos:
            break
        pos = end
    return tuple(headers)


def line_file_names(sections: Sections, offset: int, comp_dir: str) -> list[str | None]:
    """The file table of the line program at ``offset`` of ``.debug_line``.

    DWARF 2-4 count files from 1 (index 0 is None here); DWARF 5 counts from 0."""
    data = sections.line
    length = _U32.unpack_from(data, offset)[0]
    pos = offset + 4
    offset_size = 4
    if length == 0xFFFFFFFF:
        pos += 8
        offset_size = 8
    version = _U16.unpack_from(data, pos)[0]
    pos += 2
    if version >= 5:
        pos += 2  # address_size, segment_selector_size
    pos += offset_size  # header_length
    pos += 1  # minimum_instruction_length
    if version >= 4:
        pos += 1  # maximum_operations_per_instruction
    pos += 3  # default_is_stmt, line_base, line_range
    opcode_base = data[pos]
    pos += 1 + (opcode_base - 1)
    if version < 5:
        directories = [comp_dir]
        while data[pos] != 0:
            stop = data.index(b"\0", pos)
            directories.append(_join(comp_dir, data[pos:stop].decode("utf-8", "surrogateescape")))
            pos = stop + 1
        pos += 1
        files: list[str | None] = [None]
        while data[pos] != 0:
            stop = data.index(b"\0", pos)
            name = data[pos:stop].decode("utf-8", "surrogateescape")
            pos = stop + 1
            index, pos = uleb(data, pos)
            _, pos = uleb(data, pos)  # modification time
            _, pos = uleb(data, pos)  # length
            files.append(_join(directories[index] if index < len(directories) else "", name))
        return files

    def entries(pos: int) -> tuple[list[dict[int, Value]], int]:
        count = data[pos]
        pos += 1
        formats = []
        for _ in range(count):
            content, pos = uleb(data, pos)
            form, pos = uleb(data, pos)
            formats.append((content, form))
        number, pos = uleb(data, pos)
        table = []
        for _ in range(number):
            entry: dict[int, Value] = {}
            for content, form in formats:
                value, pos = _line_value(sections, data, pos, form, offset_size)
                entry[content] = value
            table.append(entry)
        return table, pos

    raw_directories, pos = entries(pos)
    raw_files, pos = entries(pos)
    directories_v5 = [str(d.get(DW_LNCT_path, "")) for d in raw_directories]
    if directories_v5:
        directories_v5 = [directories_v5[0]] + [_join(directories_v5[0], d) for d in directories_v5[1:]]
    out: list[str | None] = []
    for entry in raw_files:
        slot = entry.get(DW_LNCT_directory_index, 0)
        directory = directories_v5[slot] if isinstance(slot, int) and slot < len(directories_v5) else ""
        out.append(_join(directory, str(entry.get(DW_LNCT_path, ""))))
    return out


def _line_value(sections: Sections, data: bytes, pos: int, form: int, offset_size: int) -> tuple[Value, int]:
    if form == DW_FORM_string:
        stop = data.index(b"\0", pos)
        return data[pos:stop].decode("utf-8", "surrogateescape"), stop + 1
    if form in (DW_FORM_line_strp, DW_FORM_strp):
        at = int.from_bytes(data[pos : pos + offset_size], "little")
        table = sections.line_str if form == DW_FORM_line_strp else sections.str
        return _cstring(table, at), pos + offset_size
    if form in (DW_FORM_udata,):
        return uleb(data, pos)
    fixed = {DW_FORM_data1: 1, DW_FORM_data2: 2, DW_FORM_data4: 4, DW_FORM_data8: 8, DW_FORM_data16: 16}
    if form in fixed:
        width = fixed[form]
        return int.from_bytes(data[pos : pos + width], "little"), pos + width
    if form == DW_FORM_block:
        length, pos = uleb(data, pos)
        return bytes(data[pos : pos + length]), pos + length
    raise DwarfError(f"form 0x{form:x} in a line table's file entries")


def member_offset(value: Value | None) -> int | None:
    """``DW_AT_data_member_location`` as a byte offset: a constant, or the simple expressions
    ``DW_OP_plus_uconst N`` / ``DW_OP_constu N``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, bytes) and value and value[0] in (DW_OP_plus_uconst, DW_OP_constu):
        number, stop = uleb(value, 1)
        return number if stop == len(value) else None
    return None
