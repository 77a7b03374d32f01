"""Type layouts from DWARF, and whether a patch changes any that its functions use.

A patch replaces functions, never the data the running program holds: a function compiled
against a type whose size, alignment, field offsets or field types (or, for an enum, its
variants and their discriminants and fields) differ from the running program's would read
and write that data wrongly. Such a change can't be hot-patched; the program must restart.

- ``function_facts(objects, linkage_names)``: each function's declaration (file, line) and the
  named types it uses: those of its parameters, return value and locals (in nested blocks
  too), followed through pointers, references, arrays, typedefs, fields and enum variants.
  Only the objects whose symbol table defines one of the functions are parsed.
- ``type_layouts(objects, names=None)``: a ``LayoutTable`` of ``Layout`` values by qualified
  name (``app::Player``, ``app::Wrapper<u32>``: generics as rustc writes them).
- ``layout_changes(old, new, names)``: ``LayoutChange``s with a plain-English ``why``.
- ``layout_check(old, objects, linkage_names)``: the three together for one patch, parsing
  the patch's objects once; a ``LayoutUnknown`` when the check could not be made.
- ``program_layouts(paths, cache_dir)``: the running program's table, built once from its
  objects (``.o`` and ``.rlib``) and kept as JSON under a digest of their bytes.

Compiler-made types (closure and coroutine environments, vtables) are not reported as used
types, since their names and shapes follow the function bodies the patch replaces; the types
they hold are followed, though.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.store import write_json_atomic
from daemon.analysis.unchanged_sections import unit_key
from daemon.binary.demangle import demangle
from daemon.binary.dwarf import (
    Die,
    DW_AT_abstract_origin,
    DW_AT_alignment,
    DW_AT_byte_size,
    DW_AT_const_value,
    DW_AT_count,
    DW_AT_data_member_location,
    DW_AT_decl_file,
    DW_AT_decl_line,
    DW_AT_declaration,
    DW_AT_discr,
    DW_AT_discr_value,
    DW_AT_encoding,
    DW_AT_external,
    DW_AT_linkage_name,
    DW_AT_MIPS_linkage_name,
    DW_AT_specification,
    DW_AT_type,
    DW_AT_upper_bound,
    DW_ATE_signed,
    DW_ATE_signed_char,
    DW_TAG_array_type,
    DW_TAG_base_type,
    DW_TAG_const_type,
    DW_TAG_enumeration_type,
    DW_TAG_enumerator,
    DW_TAG_formal_parameter,
    DW_TAG_inlined_subroutine,
    DW_TAG_lexical_block,
    DW_TAG_member,
    DW_TAG_namespace,
    DW_TAG_pointer_type,
    DW_TAG_reference_type,
    DW_TAG_rvalue_reference_type,
    DW_TAG_structure_type,
    DW_TAG_subprogram,
    DW_TAG_subrange_type,
    DW_TAG_subroutine_type,
    DW_TAG_template_type_param,
    DW_TAG_typedef,
    DW_TAG_union_type,
    DW_TAG_variable,
    DW_TAG_variant,
    DW_TAG_variant_part,
    DW_TAG_volatile_type,
    Sections,
    Unit,
    line_program_headers,
    member_offset,
)
from daemon.binary.elf_objects import (
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    ObjectFormatError,
    Section,
    object_files,
)

_LLVM_SUFFIX = re.compile(r"\.llvm\.\d+$")
_AGGREGATES = frozenset({DW_TAG_structure_type, DW_TAG_union_type, DW_TAG_enumeration_type})
_TYPE_TAGS = _AGGREGATES | {
    DW_TAG_base_type,
    DW_TAG_pointer_type,
    DW_TAG_reference_type,
    DW_TAG_rvalue_reference_type,
    DW_TAG_array_type,
    DW_TAG_typedef,
    DW_TAG_subroutine_type,
}
_FOLLOWED = frozenset(
    {
        DW_TAG_pointer_type,
        DW_TAG_reference_type,
        DW_TAG_rvalue_reference_type,
        DW_TAG_array_type,
        DW_TAG_typedef,
        DW_TAG_const_type,
        DW_TAG_volatile_type,
    }
)
_SCOPES = frozenset({DW_TAG_namespace, DW_TAG_structure_type, DW_TAG_union_type, DW_TAG_enumeration_type})
_CACHE_FORMAT = 2  # 2: rustc's allocator shims no longer count among the objects without debug info


def normalise(linkage_name: str) -> str:
    """A symbol or linkage name without LLVM's ``.llvm.<digits>`` suffix."""
    return _LLVM_SUFFIX.sub("", linkage_name)


@dataclass(frozen=True, order=True)
class Field:
    name: str
    offset: int
    type: str


@dataclass(frozen=True, order=True)
class Variant:
    name: str
    discriminant: int | None  # None: the variant a niche-optimised enum keeps untagged
    fields: tuple[Field, ...]  # sorted by name; offsets from the start of the enum


@dataclass(frozen=True)
class Layout:
    """A type's layout, compared by value. Fields, variants and enumerators are kept sorted by
    name: their order in the source is no part of the layout, their offsets are."""

    name: str
    kind: str  # "struct", "union", "enum" (Rust enum with data), "c-enum" (enumeration type)
    size: int | None
    alignment: int | None
    fields: tuple[Field, ...] = ()
    discriminant: Field | None = None  # the tag of an enum: name "", its offset and type
    variants: tuple[Variant, ...] = ()
    enumerators: tuple[tuple[str, int], ...] = ()
    repr_type: str | None = None  # a C-like enum's integer type

    @property
    def members(self) -> dict[str, tuple[int, str]]:
        return {f.name: (f.offset, f.type) for f in self.fields}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "alignment": self.alignment,
            "fields": [[f.name, f.offset, f.type] for f in self.fields],
            "discriminant": None if self.discriminant is None else [self.discriminant.offset, self.discriminant.type],
            "variants": [
                [v.name, v.discriminant, [[f.name, f.offset, f.type] for f in v.fields]] for v in self.variants
            ],
            "enumerators": [list(e) for e in self.enumerators],
            "repr_type": self.repr_type,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Layout:
        discriminant = raw["discriminant"]
        return cls(
            name=raw["name"],
            kind=raw["kind"],
            size=raw["size"],
            alignment=raw["alignment"],
            fields=tuple(Field(n, o, t) for n, o, t in raw["fields"]),
            discriminant=None if discriminant is None else Field("", discriminant[0], discriminant[1]),
            variants=tuple(Variant(n, d, tuple(Field(*f) for f in fs)) for n, d, fs in raw["variants"]),
            enumerators=tuple((n, v) for n, v in raw["enumerators"]),
            repr_type=raw["repr_type"],
        )


@dataclass(frozen=True)
class LayoutUnknown:
    """The layout check could not be made; ``why`` says what is missing. Never "no change"."""

    why: str


@dataclass(frozen=True)
class LayoutChange:
    type: str  # the qualified type name
    why: str  # "app::Player: size 16 → 24 bytes; field `score` added"
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class FunctionFacts:
    linkage_name: str  # as asked for
    name: str  # qualified, e.g. app::game::update
    file: str | None  # the declaration's source path
    line: int | None
    types: frozenset[str]  # qualified names of the struct, union and enum types it uses


class LayoutTable(Mapping[str, Layout]):
    """Layouts by qualified name, and what could not be read.

    ``ambiguous`` holds names under which the objects define different layouts (two versions
    of one crate in a program); they are not in the mapping itself. ``without_debug_info``
    lists the objects that carry no DWARF."""

    def __init__(
        self,
        layouts: dict[str, Layout] | None = None,
        ambiguous: dict[str, frozenset[Layout]] | None = None,
        without_debug_info: Sequence[str] = (),
    ) -> None:
        self.layouts: dict[str, Layout] = layouts or {}
        self.ambiguous: dict[str, frozenset[Layout]] = ambiguous or {}
        self.without_debug_info: tuple[str, ...] = tuple(without_debug_info)

    def __getitem__(self, name: str) -> Layout:
        return self.layouts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.layouts)

    def __len__(self) -> int:
        return len(self.layouts)

    def __repr__(self) -> str:
        return (
            f"LayoutTable({len(self.layouts)} types, {len(self.ambiguous)} ambiguous, "
            f"{len(self.without_debug_info)} objects without debug info)"
        )

    def add(self, layout: Layout) -> None:
        if layout.name in self.ambiguous:
            self.ambiguous[layout.name] = self.ambiguous[layout.name] | {layout}
            return
        known = self.layouts.get(layout.name)
        if known is None:
            self.layouts[layout.name] = layout
        elif known != layout:
            del self.layouts[layout.name]
            self.ambiguous[layout.name] = frozenset({known, layout})

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _CACHE_FORMAT,
            "layouts": [layout.to_json() for layout in self.layouts.values()],
            "ambiguous": {n: [layout.to_json() for layout in sorted(ls, key=repr)] for n, ls in self.ambiguous.items()},
            "without_debug_info": list(self.without_debug_info),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LayoutTable:
        if raw.get("format") != _CACHE_FORMAT:
            raise ValueError("a layout table in another format")
        layouts = {entry["name"]: Layout.from_json(entry) for entry in raw["layouts"]}
        ambiguous = {n: frozenset(Layout.from_json(e) for e in entries) for n, entries in raw["ambiguous"].items()}
        return cls(layouts, ambiguous, raw["without_debug_info"])


# ---------------------------------------------------------------------------------------------
# Reading one unit


class _UnitReader:
    """Names, layouts and type closures over one unit's DIEs, memoised."""

    def __init__(self, unit: Unit) -> None:
        self.unit = unit
        self._names: dict[int, str] = {}
        self._qualified: dict[int, str] = {}
        self._layouts: dict[int, Layout | None] = {}
        self._subprograms: dict[str, list[int]] | None = None
        self._functions: dict[tuple[int, str, str], tuple[FunctionFacts | LayoutUnknown, dict[str, list[int]]]] = {}

    def subprograms(self) -> dict[str, list[int]]:
        """Normalised linkage name → the subprogram DIEs that carry it, in order (declarations
        too). Only the linkage name is decoded; a DIE without one (a concrete instance
        pointing at its declaration) is read in full."""
        if self._subprograms is None:
            found: dict[str, list[int]] = {}
            unit = self.unit
            unit.scan()
            for offset, tag in zip(unit.offsets, unit.tags):
                if tag != DW_TAG_subprogram:
                    continue
                linkage: object = unit.attribute(offset, DW_AT_linkage_name)
                if linkage is None:
                    die = unit.die(offset)
                    linkage = self.value(die, DW_AT_linkage_name) or self.value(die, DW_AT_MIPS_linkage_name)
                if isinstance(linkage, str):
                    found.setdefault(normalise(linkage), []).append(offset)
            self._subprograms = found
        return self._subprograms

    def definition(self, key: str) -> int | None:
        """The first subprogram DIE that defines (not declares) the function ``key``."""
        for offset in self.subprograms().get(key, ()):
            if not self.unit.die(offset).get(DW_AT_declaration):
                return offset
        return None

    def function(
        self, offset: int, asked: str, path: str
    ) -> tuple[FunctionFacts | LayoutUnknown, dict[str, list[int]]]:
        """The facts of the function defined at ``offset``, and its types' DIEs by name."""
        key = (offset, asked, path)
        found = self._functions.get(key)
        if found is None:
            found = self._functions[key] = self._read_function(offset, asked, path)
        return found

    def _read_function(
        self, offset: int, asked: str, path: str
    ) -> tuple[FunctionFacts | LayoutUnknown, dict[str, list[int]]]:
        if not self.has_types():
            why = f"{path} has only limited debug info (no types): built with -C debuginfo=1 or line-tables-only"
            return LayoutUnknown(why), {}
        unit = self.unit
        die = unit.die(offset)
        used = self.used_types(self.function_roots(die))
        decl_file = self.value(die, DW_AT_decl_file)
        decl_line = self.value(die, DW_AT_decl_line)
        file: str | None = None
        if isinstance(decl_file, int):
            files = unit.file_names()
            file = files[decl_file] if 0 <= decl_file < len(files) else None
        origin = die
        spec = die.ref(DW_AT_specification) or die.ref(DW_AT_abstract_origin)
        if spec is not None and self._die_anywhere(spec) is not None:
            origin = unit.die(spec)
        facts = FunctionFacts(
            linkage_name=asked,
            name=self.qualified(origin.offset),
            file=file,
            line=decl_line if isinstance(decl_line, int) else None,
            types=frozenset(used),
        )
        return facts, used

    def die(self, offset: int) -> Die:
        return self.unit.die(offset)

    def attribute(self, die: Die, attribute: int) -> Die | None:
        """The DIE ``attribute`` (a reference) points to, following ``DW_AT_abstract_origin``
        and ``DW_AT_specification`` when ``die`` lacks it."""
        current: Die | None = die
        for _ in range(8):
            if current is None:
                return None
            target = current.ref(attribute)
            if target is not None:
                return self._die_anywhere(target)
            origin = current.ref(DW_AT_abstract_origin) or current.ref(DW_AT_specification)
            current = self._die_anywhere(origin) if origin is not None else None
        return None

    def value(self, die: Die, attribute: int) -> object:
        current: Die | None = die
        for _ in range(8):
            if current is None:
                return None
            if attribute in current.attributes:
                return current.attributes[attribute]
            origin = current.ref(DW_AT_abstract_origin) or current.ref(DW_AT_specification)
            current = self._die_anywhere(origin) if origin is not None else None
        return None

    def _die_anywhere(self, offset: int) -> Die | None:
        if self.unit.offset <= offset < self.unit.end:
            return self.unit.die(offset)
        return None  # a reference into another unit (DW_FORM_ref_addr): rustc does not write them

    def qualified(self, offset: int) -> str:
        """The DIE's name prefixed with its enclosing namespaces and types: ``app::Player``."""
        cached = self._qualified.get(offset)
        if cached is not None:
            return cached
        die = self.die(offset)
        own = die.name or ""
        parent = self.unit.parent(offset)
        if parent is not None:
            parent_die = self.die(parent)
            if parent_die.tag in _SCOPES or parent_die.tag == DW_TAG_subprogram:
                prefix = self.qualified(parent)
                own = f"{prefix}::{own}" if prefix else own
        self._qualified[offset] = own
        return own

    def type_name(self, offset: int | None, depth: int = 0) -> str:
        if offset is None:
            return "()"
        cached = self._names.get(offset)
        if cached is not None:
            return cached
        die = self.die(offset)
        tag = die.tag
        name: str
        if tag in _AGGREGATES or tag == DW_TAG_typedef:
            name = self.qualified(offset)
        elif depth > 16:
            name = die.name or "?"
        elif tag in (DW_TAG_pointer_type, DW_TAG_reference_type, DW_TAG_rvalue_reference_type):
            name = die.name or "*" + self.type_name(die.ref(DW_AT_type), depth + 1)
        elif tag == DW_TAG_array_type:
            name = self.type_name(die.ref(DW_AT_type), depth + 1)
            dims: list[str] = []
            for child in die.children():
                if child.tag == DW_TAG_subrange_type:
                    count = child.number(DW_AT_count)
                    upper = child.number(DW_AT_upper_bound)
                    dims.append(str(count) if count is not None else str(upper + 1) if upper is not None else "?")
            for dim in reversed(dims):
                name = f"[{name}; {dim}]"
        elif tag in (DW_TAG_const_type, DW_TAG_volatile_type):
            name = self.type_name(die.ref(DW_AT_type), depth + 1)
        elif tag == DW_TAG_subroutine_type:
            name = die.name or "fn(…)"
        else:
            name = die.name or f"<DW_TAG 0x{tag:x}>"
        self._names[offset] = name
        return name

    def is_reported(self, offset: int) -> bool:
        """A named, defined struct, union or enum that is no enum's variant nor compiler-made."""
        die = self.die(offset)
        if die.tag not in _AGGREGATES or die.get(DW_AT_declaration):
            return False
        own = die.name or ""
        if not own or own.startswith("{") or own.endswith("::{vtable_type}"):
            return False
        parent = self.unit.parent(offset)
        return parent is None or self.die(parent).tag not in _AGGREGATES

    def layout(self, offset: int) -> Layout | None:
        if offset not in self._layouts:
            self._layouts[offset] = self._read_layout(offset)
        return self._layouts[offset]

    def _read_layout(self, offset: int) -> Layout | None:
        die = self.die(offset)
        if die.tag not in _AGGREGATES or die.get(DW_AT_declaration):
            return None
        name = self.qualified(offset)
        size = die.number(DW_AT_byte_size)
        alignment = die.number(DW_AT_alignment)
        if die.tag == DW_TAG_enumeration_type:
            repr_die = die.ref(DW_AT_type)
            signed = False
            if repr_die is not None:
                encoding = self.die(repr_die).number(DW_AT_encoding)
                signed = encoding in (DW_ATE_signed, DW_ATE_signed_char)
            enumerators = []
            for child in die.children():
                if child.tag != DW_TAG_enumerator:
                    continue
                value = child.number(DW_AT_const_value) or 0
                if signed and size and value >= 1 << (8 * size - 1) and value < 1 << (8 * size):
                    value -= 1 << (8 * size)
                enumerators.append((child.name or "", value))
            return Layout(
                name,
                "c-enum",
                size,
                alignment,
                enumerators=tuple(sorted(enumerators)),
                repr_type=self.type_name(repr_die) if repr_die is not None else None,
            )
        fields: list[Field] = []
        discriminant: Field | None = None
        variants: list[Variant] = []
        for child in die.children():
            if child.tag == DW_TAG_member:
                if child.get(DW_AT_external) or child.get(DW_AT_declaration):
                    continue  # an associated static, not stored in the value
                fields.append(self._field(child))
            elif child.tag == DW_TAG_variant_part:
                discriminant, variants = self._variants(child)
        kind = "union" if die.tag == DW_TAG_union_type else "enum" if variants or discriminant else "struct"
        return Layout(name, kind, size, alignment, tuple(sorted(fields)), discriminant, tuple(sorted(variants)))

    def _field(self, member: Die, base: int = 0) -> Field:
        offset = member_offset(member.get(DW_AT_data_member_location)) or 0
        return Field(member.name or "", base + offset, self.type_name(member.ref(DW_AT_type)))

    def _variants(self, part: Die) -> tuple[Field | None, list[Variant]]:
        discriminant: Field | None = None
        tag_offset = part.ref(DW_AT_discr)
        variants: list[Variant] = []
        for child in part.children():
            if child.tag == DW_TAG_member and (tag_offset is None or child.offset == tag_offset):
                found = self._field(child)
                discriminant = Field("", found.offset, found.type)
            elif child.tag == DW_TAG_variant:
                value = child.get(DW_AT_discr_value)
                number = value if isinstance(value, int) and not isinstance(value, bool) else None
                for member in child.children():
                    if member.tag != DW_TAG_member:
                        continue
                    base = member_offset(member.get(DW_AT_data_member_location)) or 0
                    body = member.ref(DW_AT_type)
                    inner: list[Field] = []
                    if body is not None:
                        for f in self.die(body).children():
                            if f.tag == DW_TAG_member and not f.get(DW_AT_external):
                                inner.append(self._field(f, base))
                    variants.append(Variant(member.name or "", number, tuple(sorted(inner))))
        return discriminant, variants

    def used_types(self, roots: Iterable[int]) -> dict[str, list[int]]:
        """The reported types reachable from the type DIEs ``roots``: name → DIE offset."""
        found: dict[str, list[int]] = {}
        seen: set[int] = set()
        stack = list(roots)
        while stack:
            offset = stack.pop()
            if offset in seen:
                continue
            seen.add(offset)
            die = self.die(offset)
            tag = die.tag
            if tag in _FOLLOWED:
                target = die.ref(DW_AT_type)
                if target is not None:
                    stack.append(target)
            elif tag in _AGGREGATES:
                if self.is_reported(offset):
                    found.setdefault(self.qualified(offset), []).append(offset)
                stack.extend(self._member_types(die))
            elif tag == DW_TAG_subroutine_type:
                target = die.ref(DW_AT_type)
                if target is not None:
                    stack.append(target)
                for child in die.children():
                    parameter = child.ref(DW_AT_type)
                    if parameter is not None:
                        stack.append(parameter)
        return found

    def _member_types(self, die: Die) -> list[int]:
        out: list[int] = []
        for child in die.children():
            if child.tag == DW_TAG_member:
                target = child.ref(DW_AT_type)
                if target is not None:
                    out.append(target)
            elif child.tag == DW_TAG_variant_part:
                for variant in child.children():
                    if variant.tag == DW_TAG_member:  # the tag
                        target = variant.ref(DW_AT_type)
                        if target is not None:
                            out.append(target)
                    for member in variant.children() if variant.tag == DW_TAG_variant else ():
                        body = member.ref(DW_AT_type)
                        if body is not None:
                            # The variant's own struct is part of the enum: follow its fields.
                            out.extend(self._member_types(self.die(body)))
        return out

    def function_roots(self, die: Die) -> list[int]:
        """The type DIEs a subprogram names: return, parameters, locals, generic arguments."""
        roots: list[int] = []
        returned = self.attribute(die, DW_AT_type)
        if returned is not None:
            roots.append(returned.offset)
        stack = [die]
        while stack:
            scope = stack.pop()
            for child in scope.children():
                if child.tag in (DW_TAG_formal_parameter, DW_TAG_variable, DW_TAG_template_type_param):
                    target = self.attribute(child, DW_AT_type)
                    if target is not None:
                        roots.append(target.offset)
                elif child.tag in (DW_TAG_lexical_block, DW_TAG_inlined_subroutine):
                    stack.append(child)
        return roots

    def has_types(self) -> bool:
        self.unit.scan()
        return any(tag in _TYPE_TAGS for tag in self.unit.tags)


# What a unit's DWARF is read from: these sections' bytes with their relocations, the
# values of the symbols those relocations name (S + A; a section symbol counts as 0), and
# of .debug_line only its headers (the file tables: lines and columns are never read).
_DWARF_SECTIONS = (".debug_info", ".debug_abbrev", ".debug_str", ".debug_line_str", ".debug_str_offsets")


def _dwarf_inputs(obj: ElfObject) -> tuple[object, ...]:
    by_name: dict[str, Section] = {}
    for section in obj.sections:
        by_name.setdefault(section.name, section)
    inputs: list[object] = [tuple(0 if s.type == STT_SECTION else s.value for s in obj.symbols)]
    for name in _DWARF_SECTIONS:
        found = by_name.get(name)
        inputs.append(None if found is None else (obj.section_data(found), obj.relocation_bytes(found)))
    line = by_name.get(".debug_line")
    if line is not None:
        inputs.append((line_program_headers(obj.section_data(line)), obj.relocation_bytes(line)))
    return tuple(inputs)


class UnitDwarfMemo:
    """The DWARF last read from each codegen unit, kept with the bytes it was read from.

    rustc rewrites a unit's object whenever one of its functions changes; when the edit left
    the unit's debug info and symbols byte for byte as they were (a changed string or number),
    the unit read last time is read again instead of scanning it anew: its answers come from
    the same bytes. Any other difference reads the unit afresh."""

    def __init__(self, max_units: int = 8) -> None:  # a save rewrites a few units; each kept is its bytes and DIEs
        self.max_units = max_units
        self._latest: dict[str, tuple[tuple[object, ...], _ObjectDwarf]] = {}
        self.reused = 0  # units answered from an earlier read

    def dwarf(self, obj: ElfObject) -> _ObjectDwarf:
        unit = unit_key(obj.path)
        inputs = _dwarf_inputs(obj)
        kept = self._latest.pop(unit, None)
        if kept is not None and kept[0] == inputs:
            self.reused += 1
            parsed = kept[1]
        else:
            parsed = _ObjectDwarf(obj)
        self._latest[unit] = (inputs, parsed)  # the newest last
        while len(self._latest) > self.max_units:
            del self._latest[next(iter(self._latest))]
        return parsed


class _ObjectDwarf:
    def __init__(self, obj: ElfObject) -> None:
        self.obj = obj
        self.sections = Sections.from_elf(obj)
        self._readers: list[_UnitReader] | None = None

    @property
    def readers(self) -> list[_UnitReader]:
        if self._readers is None:
            self._readers = [_UnitReader(u) for u in self.sections.units()] if self.sections else []
        return self._readers


def _defined_among(obj: ElfObject, wanted: Mapping[str, str]) -> set[str]:
    """The names in ``wanted`` (normalised) that the object's symbol table defines."""
    found: set[str] = set()
    for symbol in obj.symbols:
        name = symbol.name
        if ".llvm." in name:
            name = normalise(name)
        if name in wanted and symbol.defined:
            found.add(name)
    return found


def _facts(
    objects: Iterable[ElfObject], linkage_names: Iterable[str], memo: UnitDwarfMemo | None = None
) -> tuple[dict[str, FunctionFacts | LayoutUnknown], dict[str, list[tuple[_UnitReader, int]]]]:
    wanted = {normalise(n): n for n in linkage_names}
    out: dict[str, FunctionFacts | LayoutUnknown] = {}
    type_dies: dict[str, list[tuple[_UnitReader, int]]] = {}
    for obj in objects:
        here = _defined_among(obj, wanted)
        if not here:
            continue
        parsed = memo.dwarf(obj) if memo is not None else _ObjectDwarf(obj)
        if parsed.sections is None:
            for key in here:
                out.setdefault(wanted[key], LayoutUnknown(f"{obj.path} has no debug info (built without -g)"))
            continue
        remaining = set(here)
        for reader in parsed.readers:
            if not remaining:
                break
            for key in sorted(remaining):
                offset = reader.definition(key)
                if offset is None:
                    continue
                remaining.discard(key)
                asked = wanted[key]
                facts, used = reader.function(offset, asked, obj.path)
                out[asked] = facts
                for name, type_offsets in used.items():
                    type_dies.setdefault(name, []).extend((reader, o) for o in type_offsets)
        for key in remaining:
            out.setdefault(
                wanted[key], LayoutUnknown(f"{obj.path} defines {wanted[key]} but its debug info does not describe it")
            )
    for asked in wanted.values():
        out.setdefault(asked, LayoutUnknown(f"no object defines {asked}"))
    return out, type_dies


def function_facts(
    objects: Iterable[ElfObject], linkage_names: Iterable[str]
) -> dict[str, FunctionFacts | LayoutUnknown]:
    """Each function's declaration and the types it uses, by the linkage name asked for.

    A function is looked up only in the objects whose symbol table defines it (names
    compared without ``.llvm.N`` suffixes). It maps to ``LayoutUnknown`` when no object
    defines it, or the defining object lacks (full) debug info."""
    return _facts(objects, linkage_names)[0]


def type_layouts(objects: Iterable[ElfObject], names: Iterable[str] | None = None) -> LayoutTable:
    """The layouts of the named types the objects' DWARF defines (all, or only ``names``)."""
    wanted = None if names is None else set(names)
    table = LayoutTable()
    missing: list[str] = []
    for obj in objects:
        parsed = _ObjectDwarf(obj)
        if parsed.sections is None:
            if not _only_compiler_shims(obj):
                missing.append(obj.path)
            continue
        for reader in parsed.readers:
            _collect(reader, table, wanted)
    table.without_debug_info = tuple(missing)
    return table


# The allocator shims rustc writes into an executable's link, without debug info: `__rustc::`
# symbols (v0-mangled), or the older unmangled `__rust_alloc`, `__rg_…`, `__rdl_…` names.
_SHIM_PREFIXES = ("__rust_", "__rg_", "__rdl_", "__rustc")


def _only_compiler_shims(obj: ElfObject) -> bool:
    """An object that defines nothing but rustc's allocator shims: it uses no program type, so
    its missing debug info hides no layout."""
    defined = [s.name for s in obj.symbols if s.defined and s.type in (STT_FUNC, STT_OBJECT) and s.name]
    return bool(defined) and all(
        name.startswith(_SHIM_PREFIXES) or ("___rustc" in name and demangle(name).startswith("__rustc::"))
        for name in defined
    )


def _collect(reader: _UnitReader, table: LayoutTable, wanted: set[str] | None) -> None:
    unit = reader.unit
    unit.scan()
    seen_here: set[str] = set()
    for offset, tag in zip(unit.offsets, unit.tags):
        if tag not in _AGGREGATES or not reader.is_reported(offset):
            continue
        name = reader.qualified(offset)
        if (wanted is not None and name not in wanted) or name in seen_here:
            continue
        seen_here.add(name)
        layout = reader.layout(offset)
        if layout is not None:
            table.add(layout)


# ---------------------------------------------------------------------------------------------
# Comparing


def _tick(name: str) -> str:
    return f"`{name}`"


def _field_changes(old: tuple[Field, ...], new: tuple[Field, ...], prefix: str = "") -> list[str]:
    before = {f.name: f for f in old}
    after = {f.name: f for f in new}
    parts: list[str] = []
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    common = [n for n in after if n in before]
    parts += [f"{prefix}field {_tick(n)} added" for n in sorted(added)]
    parts += [f"{prefix}field {_tick(n)} removed" for n in sorted(removed)]
    parts += [
        f"{prefix}field {_tick(n)} retyped {before[n].type} → {after[n].type}"
        for n in sorted(common)
        if before[n].type != after[n].type
    ]
    moved = [n for n in sorted(common) if before[n].offset != after[n].offset]
    if moved:
        shifts = ", ".join(f"{_tick(n)} {before[n].offset} → {after[n].offset}" for n in moved)
        swapped = sorted(before[n].offset for n in moved) == sorted(after[n].offset for n in moved)
        if len(moved) > 1 and swapped and not added and not removed:
            parts.append(f"{prefix}fields reordered ({shifts})")
        else:
            parts.append(f"{prefix}{'field' if len(moved) == 1 else 'fields'} moved ({shifts})")
    return parts


def describe_change(old: Layout, new: Layout) -> list[str]:
    """What differs between two layouts of one type, in words (empty when they are equal)."""
    if old == new:
        return []
    parts: list[str] = []
    if old.kind != new.kind:
        parts.append(f"kind {old.kind} → {new.kind}")
    if old.size != new.size:
        parts.append(f"size {old.size} → {new.size} bytes")
    if old.alignment != new.alignment:
        parts.append(f"alignment {old.alignment} → {new.alignment}")
    parts += _field_changes(old.fields, new.fields)
    if old.discriminant != new.discriminant:

        def tag(d: Field | None) -> str:
            return "none" if d is None else f"{d.type} at {d.offset}"

        parts.append(f"discriminant {tag(old.discriminant)} → {tag(new.discriminant)}")
    before = {v.name: v for v in old.variants}
    after = {v.name: v for v in new.variants}
    parts += [f"variant {_tick(n)} added" for n in sorted(after.keys() - before.keys())]
    parts += [f"variant {_tick(n)} removed" for n in sorted(before.keys() - after.keys())]
    for n in sorted(after.keys() & before.keys()):
        if before[n].discriminant != after[n].discriminant:
            parts.append(
                f"variant {_tick(n)} discriminant {_value(before[n].discriminant)} → {_value(after[n].discriminant)}"
            )
        parts += _field_changes(before[n].fields, after[n].fields, prefix=f"variant {_tick(n)}: ")
    if old.repr_type != new.repr_type:
        parts.append(f"representation {old.repr_type} → {new.repr_type}")
    old_values = dict(old.enumerators)
    new_values = dict(new.enumerators)
    parts += [f"enumerator {_tick(n)} added" for n in sorted(new_values.keys() - old_values.keys())]
    parts += [f"enumerator {_tick(n)} removed" for n in sorted(old_values.keys() - new_values.keys())]
    parts += [
        f"enumerator {_tick(n)} = {old_values[n]} → {new_values[n]}"
        for n in sorted(new_values.keys() & old_values.keys())
        if old_values[n] != new_values[n]
    ]
    return parts or ["layout differs"]


def _value(discriminant: int | None) -> str:
    return "untagged" if discriminant is None else str(discriminant)


def layout_changes(old: Mapping[str, Layout], new: Mapping[str, Layout], names: Iterable[str]) -> list[LayoutChange]:
    """The types among ``names`` whose layout in ``new`` differs from ``old``'s.

    A name missing from ``new`` isn't compared; one missing from ``old`` is a new type, not a
    change. When ``old`` is a ``LayoutTable`` with several layouts under one name, ``new`` must
    match one of them."""
    changes: list[LayoutChange] = []
    old_ambiguous = old.ambiguous if isinstance(old, LayoutTable) else {}
    for name in sorted(set(names)):
        after = new.get(name)
        if after is None:
            continue
        choices = old_ambiguous.get(name)
        if choices is not None:
            if after not in choices:
                why = f"{name}: differs from each of the {len(choices)} layouts the program has under this name"
                changes.append(LayoutChange(name, why, (why.split(": ", 1)[1],)))
            continue
        before = old.get(name)
        if before is None or before == after:
            continue
        details = tuple(describe_change(before, after))
        changes.append(LayoutChange(name, f"{name}: {'; '.join(details)}", details))
    return changes


def layout_check(
    old: LayoutTable, objects: Iterable[ElfObject], linkage_names: Iterable[str]
) -> list[LayoutChange] | LayoutUnknown:
    """Whether the patch's functions use a type whose layout differs from the program's.

    ``objects`` are the patch's objects (only those defining the functions are parsed), ``old``
    the program's table. An empty list: no change; ``LayoutUnknown``: the check was not made."""
    return check_functions(old, objects, linkage_names)[1]


def check_functions(
    old: LayoutTable,
    objects: Iterable[ElfObject],
    linkage_names: Iterable[str],
    *,
    complete: Callable[[], LayoutTable] | None = None,
    memo: UnitDwarfMemo | None = None,
) -> tuple[dict[str, FunctionFacts | LayoutUnknown], list[LayoutChange] | LayoutUnknown]:
    """``function_facts`` and ``layout_check`` from one reading of the patch's objects.

    With ``complete``, ``old`` may be a part of the program's table: it decides only when
    every type the functions use is in it with the patch's layout (another object may have a
    second layout under the same name, so a difference is not yet a change); otherwise
    ``complete()`` gives the whole table, which decides. ``memo`` keeps each unit's DWARF
    for the next check (see ``UnitDwarfMemo``)."""
    facts, type_dies = _facts(objects, linkage_names, memo)
    if complete is not None and not any(isinstance(f, LayoutUnknown) for f in facts.values()):
        if all(name in old or name in old.ambiguous for name in type_dies) and _checked(old, facts, type_dies) == []:
            return facts, []
        old = complete()
    return facts, _checked(old, facts, type_dies)


def _checked(
    old: LayoutTable, facts: Mapping[str, FunctionFacts | LayoutUnknown], type_dies: Mapping[str, Any]
) -> list[LayoutChange] | LayoutUnknown:
    unknown = [f.why for f in facts.values() if isinstance(f, LayoutUnknown)]
    if unknown:
        return LayoutUnknown("; ".join(sorted(set(unknown))))
    if not old.layouts and not old.ambiguous:
        return LayoutUnknown("the program's objects carry no type layouts (built without debug info?)")
    new = LayoutTable()
    for reader, offset in (die for dies in type_dies.values() for die in dies):
        layout = reader.layout(offset)
        if layout is not None:
            new.add(layout)
    missing = [n for n in type_dies if n not in old and n not in old.ambiguous]
    if missing and old.without_debug_info:
        return LayoutUnknown(
            f"{', '.join(sorted(missing)[:3])} not in the program's debug info, and "
            f"{len(old.without_debug_info)} of its objects have none (e.g. {old.without_debug_info[0]})"
        )
    changes = layout_changes(old, new, type_dies)
    for name, alternatives in sorted(new.ambiguous.items()):
        # The patch sees two layouts under one name (two versions of a crate): each must be one
        # the program has.
        known = old.ambiguous.get(name) or (frozenset({old[name]}) if name in old else None)
        if known is not None and not alternatives <= known:
            detail = f"{len(alternatives - known)} of the {len(alternatives)} layouts under this name are new"
            changes.append(LayoutChange(name, f"{name}: {detail}", (detail,)))
    return changes


# ---------------------------------------------------------------------------------------------
# The program side, cached


def _digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256(f"layouts v{_CACHE_FORMAT}\n".encode())
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
        h.update(len(data).to_bytes(8, "little"))
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def program_layouts(paths: Iterable[str | Path], cache_dir: str | Path | None = None) -> LayoutTable:
    """The layouts of every named type in the program's objects (``.o`` files and ``.rlib``
    archives), read once and kept in ``cache_dir`` as JSON under a digest of the objects' bytes.
    A file that can't be read as ELF counts among ``without_debug_info``."""
    files = [Path(p) for p in paths]
    cache: Path | None = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"layouts-{_digest(files)}.json"
        try:
            return LayoutTable.from_json(json.loads(cache.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            pass

    unreadable: list[str] = []

    def objects() -> Iterator[ElfObject]:
        for path in files:
            try:
                yield from object_files(path)
            except (OSError, ObjectFormatError):
                unreadable.append(str(path))  # counted with the objects that lack debug info

    table = type_layouts(objects())
    table.without_debug_info += tuple(unreadable)
    if cache is not None:
        try:
            write_json_atomic(cache, table.to_json())
        except OSError:
            pass  # a full or read-only cache: the table is still right, only slower next time
    return table


__all__ = [
    "Field",
    "FunctionFacts",
    "Layout",
    "LayoutChange",
    "LayoutTable",
    "LayoutUnknown",
    "Variant",
    "describe_change",
    "function_facts",
    "layout_changes",
    "layout_check",
    "normalise",
    "program_layouts",
    "type_layouts",
]
