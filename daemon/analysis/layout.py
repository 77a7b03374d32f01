"""Did a type that changed code uses get a new layout? (DWARF of the patch and the program)

Patched code and the running program share data: a `World` made by the old `main` is handed
to the new `frame`. If `World`'s size, alignment, field offsets (by field name: Rust reorders
fields), field types or enum variants differ between the two builds, the new code misreads the
old data; only a restart is safe. Debug builds describe every type a function uses, so the
types are compared by their qualified names (``app::World``, ``app::Grid<u32>``).

Only types whose name mentions a workspace crate are compared (``app::World``,
``alloc::vec::Vec<app::World>``): the standard library and registry crates don't change
between two builds with the same toolchain. ``function_facts`` reads the patch side (only the
objects that hold the changed functions); ``type_layouts`` the program side, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from daemon.binary.dwarf import (
    AT_ABSTRACT_ORIGIN,
    AT_ALIGNMENT,
    AT_BYTE_SIZE,
    AT_CONST_VALUE,
    AT_COUNT,
    AT_DATA_MEMBER_LOCATION,
    AT_DECL_FILE,
    AT_DECL_LINE,
    AT_DISCR_VALUE,
    AT_LINKAGE_NAME,
    AT_MIPS_LINKAGE_NAME,
    AT_SPECIFICATION,
    AT_TYPE,
    AT_UPPER_BOUND,
    TAG_ARRAY,
    TAG_ENUMERATION,
    TAG_ENUMERATOR,
    TAG_MEMBER,
    TAG_NAMESPACE,
    TAG_STRUCTURE,
    TAG_SUBPROGRAM,
    TAG_SUBRANGE,
    TAG_TEMPLATE_TYPE_PARAM,
    TAG_UNION,
    TAG_VARIANT,
    TAG_VARIANT_PART,
    Die,
    Unit,
    walk,
)
from daemon.binary.symbols import normalise_name

_AGGREGATES = {TAG_STRUCTURE: "struct", TAG_UNION: "union", TAG_ENUMERATION: "enum"}

Member = tuple[str, int | None, str]  # name, offset, type
DISCRIMINANT = "<discriminant>"  # an enum's tag, which rustc leaves unnamed


@dataclass(frozen=True)
class Layout:
    kind: str  # struct, union, enum (C-like: enumerators; Rust: variants)
    size: int | None
    alignment: int | None
    members: tuple[Member, ...] = ()  # sorted by name
    variants: tuple[tuple[str, int | None, str, int | None], ...] = ()  # name, discriminant, type, offset
    enumerators: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class LayoutChange:
    type_name: str
    why: str  # "size 8 → 16 bytes; field `lives` added"


@dataclass(frozen=True)
class FunctionFacts:
    file: str | None
    line: int | None
    types: frozenset[str]  # qualified names of the workspace types it uses


def crate_filter(crates: Iterable[str]) -> Callable[[str], bool]:
    """Whether a qualified type name mentions one of ``crates`` (``app::``, not ``happ::``)."""
    names = sorted({re.escape(c) for c in crates})
    if not names:
        return lambda name: False
    pattern = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(names) + r")::")
    return lambda name: pattern.search(name) is not None


def qualified_name(die: Die) -> str:
    """``app::world::World``: the namespaces and enclosing types of ``die``, then its name."""
    parts = [die.name() or "?"]
    parent = die.parent
    while parent is not None and (parent.tag == TAG_NAMESPACE or parent.tag in _AGGREGATES):
        parts.append(parent.name() or "?")
        parent = parent.parent
    return "::".join(reversed(parts))


def _type_label(unit: Unit, die: Die | None) -> str:
    if die is None:
        return "()"
    if die.tag in _AGGREGATES:
        return qualified_name(die)
    name = die.name()
    if name:
        return name
    if die.tag == TAG_ARRAY:
        count = next(
            (
                c.number(AT_COUNT) or ((c.number(AT_UPPER_BOUND) or -1) + 1)
                for c in die.children
                if c.tag == TAG_SUBRANGE
            ),
            None,
        )
        return f"[{_type_label(unit, unit.ref(die, AT_TYPE))}; {count}]"
    target = unit.ref(die, AT_TYPE)
    return f"<{die.tag:#x}>{_type_label(unit, target) if target is not None else ''}"


def _layout(unit: Unit, die: Die) -> Layout:
    kind = _AGGREGATES[die.tag]
    members: list[Member] = []
    variants: list[tuple[str, int | None, str, int | None]] = []
    enumerators: list[tuple[str, int]] = []
    for child in die.children:
        if child.tag == TAG_MEMBER:
            members.append(
                (
                    child.name() or "?",
                    child.number(AT_DATA_MEMBER_LOCATION),
                    _type_label(unit, unit.ref(child, AT_TYPE)),
                )
            )
        elif child.tag == TAG_ENUMERATOR:
            enumerators.append((child.name() or "?", child.number(AT_CONST_VALUE) or 0))
        elif child.tag == TAG_VARIANT_PART:
            kind = "enum"
            for part in child.children:
                if part.tag == TAG_MEMBER:  # the discriminant itself
                    members.append(
                        (
                            part.name() or DISCRIMINANT,
                            part.number(AT_DATA_MEMBER_LOCATION),
                            _type_label(unit, unit.ref(part, AT_TYPE)),
                        )
                    )
                elif part.tag == TAG_VARIANT:
                    for field in part.children:
                        if field.tag == TAG_MEMBER:
                            variants.append(
                                (
                                    field.name() or "?",
                                    part.number(AT_DISCR_VALUE),
                                    _type_label(unit, unit.ref(field, AT_TYPE)),
                                    field.number(AT_DATA_MEMBER_LOCATION),
                                )
                            )
    return Layout(
        kind,
        die.number(AT_BYTE_SIZE),
        die.number(AT_ALIGNMENT),
        tuple(sorted(members)),
        tuple(sorted(variants, key=lambda v: (v[0], v[1] or 0))),
        tuple(enumerators),
    )


def _used_types(unit: Unit, start: Iterable[Die], wanted: Callable[[str], bool]) -> dict[str, Layout]:
    """The workspace types reachable from ``start`` through type references, members,
    variants and generic parameters, with their layouts."""
    found: dict[str, Layout] = {}
    seen: set[int] = set()
    queue = list(start)
    while queue:
        die = queue.pop()
        if die.offset in seen:
            continue
        seen.add(die.offset)
        if die.tag in _AGGREGATES:
            name = qualified_name(die)
            if not wanted(name):
                continue  # std and registry types don't change, nor what they hold but generics
            if name not in found and not die.attrs.get(0x3C):  # a declaration has no layout
                found[name] = _layout(unit, die)
            for child in walk(die):
                if child is die:
                    continue
                target = unit.ref(child, AT_TYPE)
                if target is not None:
                    queue.append(target)
                if child.tag in _AGGREGATES:
                    queue.append(child)
            continue
        target = unit.ref(die, AT_TYPE)
        if target is not None:
            queue.append(target)
        for child in die.children:
            if child.tag in (TAG_TEMPLATE_TYPE_PARAM, TAG_SUBRANGE):
                inner = unit.ref(child, AT_TYPE)
                if inner is not None:
                    queue.append(inner)
    return found


def _linkage(unit: Unit, die: Die) -> tuple[str | None, Die]:
    """A subprogram's linkage name and the entry that declares it (its specification)."""
    declared = die
    for attr in (AT_SPECIFICATION, AT_ABSTRACT_ORIGIN):
        target = unit.ref(die, attr)
        if target is not None:
            declared = target
    name = die.attrs.get(AT_LINKAGE_NAME) or declared.attrs.get(AT_LINKAGE_NAME)
    name = name or die.attrs.get(AT_MIPS_LINKAGE_NAME) or declared.attrs.get(AT_MIPS_LINKAGE_NAME)
    return (name if isinstance(name, str) else None), declared


def function_facts(
    units: Iterable[Unit], symbols: Iterable[str], crates: Iterable[str]
) -> tuple[dict[str, FunctionFacts], dict[str, Layout]]:
    """For each function of ``symbols`` (by linkage name) defined in ``units``: where it is
    declared and the workspace types it uses; and those types' layouts as these units give them."""
    wanted_symbols = {normalise_name(s) for s in symbols}
    wanted = crate_filter(crates)
    facts: dict[str, FunctionFacts] = {}
    layouts: dict[str, Layout] = {}
    for unit in units:
        for die in unit.dies.values():
            if die.tag != TAG_SUBPROGRAM or die.attrs.get(0x3C):  # definitions only
                continue
            linkage, declared = _linkage(unit, die)
            if linkage is None or normalise_name(linkage) not in wanted_symbols:
                continue
            start = [d for d in walk(die) if d is not die and unit.ref(d, AT_TYPE) is not None]
            start = [t for d in start if (t := unit.ref(d, AT_TYPE)) is not None]
            returned = unit.ref(die, AT_TYPE) or unit.ref(declared, AT_TYPE)
            if returned is not None:
                start.append(returned)
            used = _used_types(unit, start, wanted)
            for name, layout in used.items():
                layouts.setdefault(name, layout)
            index = declared.number(AT_DECL_FILE)
            file = unit.files[index] if index is not None and 0 <= index < len(unit.files) else None
            previous = facts.get(normalise_name(linkage))
            types = frozenset(used) | (previous.types if previous else frozenset())
            facts[normalise_name(linkage)] = FunctionFacts(file, declared.number(AT_DECL_LINE), types)
    return facts, layouts


def type_layouts(units: Iterable[Unit], crates: Iterable[str]) -> dict[str, Layout]:
    """Every workspace type the units describe, with its layout (the first description of a
    name wins: every unit that uses a type describes it the same way)."""
    wanted = crate_filter(crates)
    layouts: dict[str, Layout] = {}
    for unit in units:
        for die in unit.dies.values():
            if die.tag in _AGGREGATES and not die.attrs.get(0x3C):
                name = qualified_name(die)
                if name not in layouts and wanted(name):
                    layouts[name] = _layout(unit, die)
    return layouts


def describe_change(old: Layout, new: Layout) -> str | None:
    """What changed between two layouts of one type, in plain English (None: nothing)."""
    if old == new:
        return None
    said: list[str] = []
    if old.size != new.size:
        said.append(f"size {old.size} → {new.size} bytes")
    if old.alignment != new.alignment:
        said.append(f"alignment {old.alignment} → {new.alignment}")
    before = {m[0]: m for m in old.members}
    after = {m[0]: m for m in new.members}
    said += [f"field `{n}` added" for n in after.keys() - before.keys()]
    said += [f"field `{n}` removed" for n in before.keys() - after.keys()]
    for name in sorted(before.keys() & after.keys()):
        if name == DISCRIMINANT and before[name] != after[name]:
            said.append(
                f"its discriminant changed ({before[name][2]} at {before[name][1]} → "
                f"{after[name][2]} at {after[name][1]})"
            )
        elif before[name][2] != after[name][2]:
            said.append(f"field `{name}` retyped {before[name][2]} → {after[name][2]}")
        elif before[name][1] != after[name][1]:
            said.append(f"field `{name}` moved from offset {before[name][1]} to {after[name][1]}")
    old_variants = {v[0]: v for v in old.variants}
    new_variants = {v[0]: v for v in new.variants}
    said += [f"variant `{n}` added" for n in new_variants.keys() - old_variants.keys()]
    said += [f"variant `{n}` removed" for n in old_variants.keys() - new_variants.keys()]
    for name in sorted(old_variants.keys() & new_variants.keys()):
        if old_variants[name] != new_variants[name]:
            said.append(f"variant `{name}` changed")
    if old.enumerators != new.enumerators:
        said.append("its variants or their values changed")
    if old.kind != new.kind:
        said.append(f"{old.kind} → {new.kind}")
    return "; ".join(sorted(set(said), key=said.index)) or "its layout changed"


def layout_changes(old: Mapping[str, Layout], new: Mapping[str, Layout], names: Iterable[str]) -> list[LayoutChange]:
    """The types of ``names`` whose layout differs; a type the program doesn't have is new,
    not changed."""
    out = []
    for name in sorted(set(names)):
        if name in old and name in new:
            why = describe_change(old[name], new[name])
            if why is not None:
                out.append(LayoutChange(name, why))
    return out
