"""Prints of functions and statics in relocatable objects: which of them did an edit change?

A print is a digest of one symbol's bytes, with every relocated field zeroed, together with
its relocations as (offset, type, target, addend). A target is named, not numbered:

- a named symbol (a function, a static, an external): its name, without ``.llvm.N``;
- a function section's section symbol: the function's name;
- anonymous data (``.Lanon.*``, ``.L__unnamed_*``, ``anon.*``, ``alloc_*``, a ``.rodata.*``
  section, a string in a mergeable section): a digest of that data's content, its bytes and,
  recursively, its own relocations' targets.

So editing a string literal changes the print of the function that uses it, renumbering
anonymous constants changes nothing, and a function's print does not depend on the bodies of
the functions it calls. Data symbols that are statics or thread-locals get prints too (an
initializer that changed); vtables and promoted constants don't (they are immutable).

Prints compare builds made with the same code generation options. Debug info is one of them:
at ``opt-level=0``, full debug info keeps locals in stack slots that ``limited`` does not, so
a patch compiled with less debug info than the capture differs in nearly every function.

``object_prints(obj)`` is pure (an ``ElfObject`` in, an ``ObjectPrints`` out);
``PrintCache.prints(path)`` reads an object or an ``.rlib``, keyed by the file's identity and
then by a digest of its bytes, so objects that incremental compilation did not touch are not
parsed again. ``merge`` puts the objects of a program (or of a patch) together, and
``changed(old, new)`` lists what differs.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

from daemon.analysis.panic_locations import is_panic_location, without_line_and_column
from daemon.analysis.unchanged_sections import UnchangedSections, is_anonymous, unit_key
from daemon.binary.demangle import demangle
from daemon.binary.elf_objects import (
    EM_AARCH64,
    EM_X86_64,
    SHN_LORESERVE,
    SHT_NOBITS,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    STT_TLS,
    ElfObject,
    ObjSymbol,
    Relocation,
    Section,
    archive_members,
    objects_in,
    parse_object,
)
from daemon.binary.symbols import normalise_name

FUNCTION = "function"
DATA = "data"
TLS = "tls"

ANONYMOUS_PREFIX = "anon:"  # the graph name of anonymous data: "anon:" + its content digest

SHF_MERGE = 0x10
SHF_STRINGS = 0x20
STB_LOCAL = 0
_PRINTED_TYPES = (STT_FUNC, STT_OBJECT, STT_TLS)

# Width in bytes of the field each relocation type writes; x86_64 writes whole fields.
_X86_64_WIDTHS = {
    1: 8, 2: 4, 3: 4, 4: 4, 9: 4, 10: 4, 11: 4, 12: 2, 13: 2, 14: 1, 15: 1, 16: 8, 17: 8, 18: 8, 19: 4,
    20: 4, 21: 4, 22: 4, 23: 4, 24: 8, 25: 8, 26: 4, 32: 4, 33: 8, 34: 4, 36: 16, 37: 8, 41: 4, 42: 4, 43: 4,
}
# PC-relative x86_64 fields hold S + A - P with P the field's address: A is the target's
# offset minus the field's width (for a field that ends its instruction).
_X86_64_PC_RELATIVE = {2: 4, 4: 4, 9: 4, 13: 2, 15: 1, 24: 8, 26: 4, 41: 4, 42: 4, 43: 4, 19: 4, 20: 4, 22: 4}
# aarch64: data relocations write whole fields; instruction relocations only an immediate's
# bits of a 4-byte word (the registers stay part of the print).
_AARCH64_DATA = {257: 8, 258: 4, 259: 2, 260: 8, 261: 4, 262: 2}
_IMM_ADR = 0x60FFFFE0  # immlo (29-30) and immhi (5-23)
_IMM12 = 0x003FFC00  # bits 10-21
_IMM26 = 0x03FFFFFF
_IMM19 = 0x00FFFFE0
_IMM14 = 0x0007FFE0
_IMM16 = 0x001FFFE0
_AARCH64_INSTRUCTION_MASKS = {
    274: _IMM_ADR, 275: _IMM_ADR, 276: _IMM_ADR, 311: _IMM_ADR, 541: _IMM_ADR, 562: _IMM_ADR,
    277: _IMM12, 278: _IMM12, 284: _IMM12, 285: _IMM12, 286: _IMM12, 299: _IMM12, 312: _IMM12, 542: _IMM12,
    563: _IMM12, 564: _IMM12, 549: _IMM12, 550: _IMM12, 551: _IMM12,
    282: _IMM26, 283: _IMM26, 280: _IMM19, 273: _IMM19, 279: _IMM14,
    263: _IMM16, 264: _IMM16, 265: _IMM16, 266: _IMM16, 267: _IMM16, 268: _IMM16, 269: _IMM16,
}
_AARCH64_NO_FIELD = {569}  # TLSDESC_CALL marks an instruction; it writes nothing


class Reloc(NamedTuple):
    """A relocation with a name for its target: offset within the symbol, type, target
    (a name, or ``anon:<digest>``), addend (relative to the anonymous datum it points into)."""

    offset: int
    type: int
    target: str
    addend: int


@dataclass(frozen=True)
class Node:
    """One defined symbol (or one anonymous datum) of an object file."""

    name: str  # normalised symbol name, or anon:<digest>
    kind: str  # FUNCTION / DATA / TLS
    digest: str  # its print: bytes with relocated fields zeroed, and its relocations
    relocations: tuple[Reloc, ...]
    code: bytes = field(default=b"", repr=False)  # a function's bytes as in the object
    printed: bool = True  # compared between builds (functions, statics, thread-locals)

    @cached_property
    def anonymous_targets(self) -> tuple[str, ...]:
        """The anonymous data its relocations point at, in their order (made once: a node
        taken over from build to build is followed again with every build)."""
        return tuple(r.target for r in self.relocations if r.target.startswith(ANONYMOUS_PREFIX))


@dataclass(frozen=True)
class ObjectPrints:
    path: str
    machine: int
    nodes: Mapping[str, Node]
    reused: int = 0  # symbols whose node was taken over from an earlier build of the unit


def is_constant_data(demangled: str) -> bool:
    """Immutable data that a patch may copy freely: vtables, panic locations, promoted
    constants (the rule of ``daemon.service.patcher``'s fresh-statics check)."""
    return any(part in demangled for part in ("vtable", "{{constant}}", "CALLSITE", "::{{closure}}"))


def _mangled(name: str) -> bool:
    return name.startswith(("_ZN", "_R"))


def _rustc_shim(name: str) -> bool:
    """A symbol of rustc's own ``__rustc`` crate (the allocator shims it generates into an
    executable's link): never in a patch, whose link leaves them to the program."""
    return "___rustc" in name and demangle(name).startswith("__rustc::")


def _digest(parts: Iterable[bytes]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _mask(machine: int, code: bytearray, offset: int, rel_type: int) -> None:
    """Zero the field relocation ``rel_type`` writes at ``offset`` of ``code``."""
    if machine == EM_AARCH64:
        mask = _AARCH64_INSTRUCTION_MASKS.get(rel_type)
        if mask is not None:
            if offset + 4 <= len(code):
                word = int.from_bytes(code[offset : offset + 4], "little") & ~mask & 0xFFFFFFFF
                code[offset : offset + 4] = word.to_bytes(4, "little")
            return
        if rel_type in _AARCH64_NO_FIELD:
            return
        width = _AARCH64_DATA.get(rel_type, 4)
    else:
        width = _X86_64_WIDTHS.get(rel_type, 4 if machine == EM_X86_64 else 0)
    end = min(offset + width, len(code))
    if offset < end:
        code[offset:end] = bytes(end - offset)


class _Printer:
    """Prints of one object; anonymous data memoised by its place in the object. Given an
    earlier build of the same unit and its prints, a symbol whose section is unchanged
    (``UnchangedSections``) keeps its earlier node instead of being printed again."""

    def __init__(self, obj: ElfObject, earlier: tuple[ElfObject, ObjectPrints] | None = None) -> None:
        self.obj = obj
        self.earlier = earlier
        self.machine = obj.machine
        self.defined = obj.made_of_symbols(_printable_by_section)  # section -> symbols, by value
        self.relocations: dict[int, tuple[list[int], list[Relocation]]] = {}
        self.anonymous: dict[tuple[int, int, int], str] = {}
        self.in_progress: set[tuple[int, int, int]] = set()
        self.nodes: dict[str, Node] = {}
        self.reused = 0

    def _section_relocations(self, index: int) -> tuple[list[int], list[Relocation]]:
        found = self.relocations.get(index)
        if found is None:
            section = self.obj.sections[index]
            rels = sorted(self.obj.relocations(section), key=lambda r: r.offset)
            found = ([r.offset for r in rels], rels)
            self.relocations[index] = found
        return found

    def _range(self, section: Section, start: int, end: int) -> tuple[bytes, list[Relocation]]:
        data = self.obj.section_data(section)[start:end] if section.type != SHT_NOBITS else bytes(end - start)
        offsets, rels = self._section_relocations(section.index)
        return data, rels[bisect.bisect_left(offsets, start) : bisect.bisect_left(offsets, end)]

    def _body(self, kind: str, data: bytes, rels: list[Relocation], start: int) -> tuple[str, tuple[Reloc, ...]]:
        masked = bytearray(data)
        named: list[Reloc] = []
        for rel in rels:
            _mask(self.machine, masked, rel.offset - start, rel.type)
            target, addend = self._target(rel)
            named.append(Reloc(rel.offset - start, rel.type, target, addend))
        listed = "".join(f"{r.offset}:{r.type}:{r.target}:{r.addend};" for r in named)
        return _digest([kind.encode(), b"\0", bytes(masked), b"\0", listed.encode("utf-8", "surrogateescape")]), tuple(
            named
        )

    def _pc_bias(self, rel_type: int) -> int:
        return _X86_64_PC_RELATIVE.get(rel_type, 0) if self.machine == EM_X86_64 else 0

    def _target(self, rel: Relocation) -> tuple[str, int]:
        if not 0 < rel.symbol < len(self.obj.symbols):
            return "", rel.addend
        symbol = self.obj.symbols[rel.symbol]
        if not symbol.defined:
            return normalise_name(symbol.name), rel.addend
        if not 0 < symbol.section < len(self.obj.sections):
            return normalise_name(symbol.name), rel.addend
        section = self.obj.sections[symbol.section]
        if symbol.type == STT_SECTION:
            point = rel.addend + self._pc_bias(rel.type)
            inside = self._covering(symbol.section, point)
            if inside is not None and (inside.type == STT_FUNC or not is_anonymous(inside)):
                return normalise_name(inside.name), rel.addend - inside.value
            if section.executable:
                return f"{section.name}", rel.addend  # code without a function symbol
            start, end = self._datum(section, inside, point)
            return self._anonymous_datum(section, start, end), rel.addend - start
        if symbol.type == STT_FUNC or not is_anonymous(symbol):
            return normalise_name(symbol.name), rel.addend
        start, end = self._datum(section, symbol, symbol.value + rel.addend + self._pc_bias(rel.type))
        return self._anonymous_datum(section, start, end), symbol.value + rel.addend - start

    def _covering(self, section_index: int, point: int) -> ObjSymbol | None:
        symbols = self.defined.get(section_index, [])
        best = None
        for s in symbols:
            if s.value <= point and (point < s.value + s.size or (s.size == 0 and best is None)):
                best = s
            elif s.value > point:
                break
        if best is None and len(symbols) == 1 and symbols[0].value == 0 and self.obj.sections[section_index].executable:
            best = symbols[0]
        return best

    def _datum(self, section: Section, symbol: ObjSymbol | None, point: int) -> tuple[int, int]:
        """The byte range of the anonymous datum at ``point``: a sized symbol, one string or
        one constant of a mergeable section, or else the whole section."""
        if symbol is not None and symbol.size > 0 and symbol.type != STT_SECTION:
            return symbol.value, symbol.value + symbol.size
        if section.flags & SHF_MERGE and section.type != SHT_NOBITS:
            data = self.obj.section_data(section)
            point = max(0, min(point, len(data) - 1))
            if section.flags & SHF_STRINGS:
                start = data.rfind(b"\0", 0, point) + 1
                stop = data.find(b"\0", point)
                return start, (stop + 1 if stop >= 0 else len(data))
            entry = max(1, _entry_size(self.obj, section))
            start = point - point % entry
            return start, min(start + entry, len(data))
        return 0, section.size

    def _anonymous_datum(self, section: Section, start: int, end: int) -> str:
        key = (section.index, start, end)
        found = self.anonymous.get(key)
        if found is not None:
            return found
        if key in self.in_progress:  # a cycle: named by its place, which is stable within one print
            return f"{ANONYMOUS_PREFIX}cycle"
        self.in_progress.add(key)
        try:
            data, rels = self._range(section, start, end)
            if is_panic_location(self.obj, data, rels, start):
                data = without_line_and_column(data)  # code that only moved to another line keeps its print
            digest, named = self._body(DATA, data, rels, start)
        finally:
            self.in_progress.discard(key)
        name = ANONYMOUS_PREFIX + digest
        self.anonymous[key] = name
        if name not in self.nodes:
            self.nodes[name] = Node(name, DATA, digest, named, printed=False)
        return name

    def run(self) -> dict[str, Node]:
        reuse = self._reusable() if self.earlier is not None else None
        for section_index, symbols in self.defined.items():
            if not 0 < section_index < len(self.obj.sections):
                continue
            section = self.obj.sections[section_index]
            for symbol in symbols:
                if symbol.type == STT_FUNC:
                    kind = FUNCTION
                elif symbol.type == STT_TLS:
                    kind = TLS
                elif symbol.type == STT_OBJECT and not is_anonymous(symbol):
                    kind = DATA
                else:
                    continue
                name = normalise_name(symbol.name)
                if _rustc_shim(name):
                    continue
                if reuse is not None and name in reuse.names and reuse.sections.same(section_index):
                    self._keep(reuse.nodes, name)
                    self.reused += 1
                    continue
                end = symbol.value + symbol.size if symbol.size else section.size
                data, rels = self._range(section, symbol.value, end)
                digest, named = self._body(kind, data, rels, symbol.value)
                if kind == FUNCTION:
                    node = Node(name, kind, digest, named, code=bytes(data))
                else:
                    printed = _mangled(name) and (kind == TLS or not is_constant_data(demangle(name)))
                    node = Node(name, kind, digest, named, printed=printed)
                self.nodes[name] = _combine(self.nodes.get(name), node)
        return self.nodes

    def _reusable(self) -> _Reuse:
        """The names defined once in each build (a name defined twice has one combined node,
        which can't be taken over in part), and the section comparison."""
        assert self.earlier is not None
        earlier_obj, earlier_prints = self.earlier
        sections = UnchangedSections(earlier_obj, self.obj)
        once = self.obj.made_of_symbols(_defined_once)
        if not sections.tables_equal:  # equal tables define the same names
            once = once & earlier_obj.made_of_symbols(_defined_once)
        return _Reuse(set(once & earlier_prints.nodes.keys()), sections, earlier_prints.nodes)

    def _keep(self, nodes: Mapping[str, Node], name: str) -> None:
        """Take ``name``'s earlier node, with the anonymous data it refers to (by content)."""
        stack = [name]
        while stack:
            node = nodes[stack.pop()]
            self.nodes[node.name] = node
            stack.extend(t for t in node.anonymous_targets if t not in self.nodes and t in nodes)


class _Reuse(NamedTuple):
    names: set[str]
    sections: UnchangedSections
    nodes: Mapping[str, Node]


def _printable_by_section(symbols: list[ObjSymbol]) -> dict[int, list[ObjSymbol]]:
    """The symbols a print may cover, per section, by value (read only: kept with the symbols)."""
    defined: dict[int, list[ObjSymbol]] = {}
    for s in symbols:  # defined (``ObjSymbol.defined``, written out: run for every symbol)
        if (s.type in _PRINTED_TYPES or (s.type == 0 and s.name)) and 0 < s.section < SHN_LORESERVE:
            defined.setdefault(s.section, []).append(s)
    for listed in defined.values():
        listed.sort(key=lambda s: (s.value, -s.size))
    return defined


def _defined_once(symbols: list[ObjSymbol]) -> frozenset[str]:
    seen: set[str] = set()
    twice: set[str] = set()
    for s in symbols:
        if s.type in _PRINTED_TYPES and 0 < s.section < SHN_LORESERVE:
            name = normalise_name(s.name) if ".llvm." in s.name else s.name
            (twice if name in seen else seen).add(name)
    return frozenset(seen - twice)


def _entry_size(obj: ElfObject, section: Section) -> int:
    # sh_entsize is not kept by the reader; a ".cstN" name says it
    tail = section.name.rsplit(".cst", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 1


def _combine(earlier: Node | None, node: Node) -> Node:
    """Two definitions of one name (a local copy of an inline function in several units)."""
    if earlier is None or earlier.digest == node.digest:
        return node if earlier is None else earlier
    digests = sorted({*earlier.digest.split("+"), *node.digest.split("+")})
    return Node(
        node.name,
        node.kind,
        "+".join(digests),
        tuple(dict.fromkeys(earlier.relocations + node.relocations)),
        code=earlier.code or node.code,
        printed=earlier.printed or node.printed,
    )


def object_prints(obj: ElfObject, earlier: tuple[ElfObject, ObjectPrints] | None = None) -> ObjectPrints:
    """Prints and relocations of every function, data symbol and anonymous datum ``obj``
    defines (a relocatable object; pure). ``earlier``: an earlier build of the same unit and
    its prints; symbols whose sections did not change keep their earlier nodes."""
    printer = _Printer(obj, earlier)
    return ObjectPrints(obj.path, obj.machine, printer.run(), printer.reused)


@dataclass
class Prints:
    """The prints of a set of objects (a program crate, or a patch), merged by name."""

    machine: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    _digests: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def digests(self) -> dict[str, str]:
        """Name → print of every function, static and thread-local (made once: don't change
        ``nodes`` after asking)."""
        if self._digests is None:
            self._digests = {name: node.digest for name, node in self.nodes.items() if node.printed}
        return self._digests


def merge(objects: Iterable[ObjectPrints]) -> Prints:
    merged = Prints()
    nodes = merged.nodes
    for prints in objects:
        merged.machine = merged.machine or prints.machine
        for name, node in prints.nodes.items():
            earlier = nodes.get(name)
            nodes[name] = node if earlier is None else _combine(earlier, node)  # most names: defined once
    return merged


@dataclass(frozen=True)
class Changes:
    """What differs between two sets of prints (names sorted)."""

    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    kinds: Mapping[str, str] = field(default_factory=dict)  # name -> FUNCTION / DATA / TLS

    def functions(self) -> tuple[str, ...]:
        """Changed and added functions: code the patch runs instead of, or besides, the old."""
        return tuple(n for n in (*self.changed, *self.added) if self.kinds.get(n) == FUNCTION)

    def to_json(self) -> dict[str, object]:
        return {
            "changed": [{"name": n, "kind": self.kinds.get(n)} for n in self.changed],
            "added": [{"name": n, "kind": self.kinds.get(n)} for n in self.added],
            "removed": [{"name": n, "kind": self.kinds.get(n)} for n in self.removed],
        }


def changed(old: Prints, new: Prints) -> Changes:
    """Functions, statics and thread-locals whose print differs, that only ``new`` defines,
    and that only ``old`` defines. A function whose bytes differ only in which crate's copy of
    a generic it calls is not changed (``equivalence.same_code``)."""
    from daemon.analysis.equivalence import same_code  # here: equivalence imports this module

    before, after = old.digests(), new.digests()
    kinds = {name: node.kind for name, node in old.nodes.items() if node.printed}
    kinds.update((name, node.kind) for name, node in new.nodes.items() if node.printed)
    differ = [n for n in after.keys() & before.keys() if after[n] != before[n]]
    machine = new.machine or old.machine
    return Changes(
        changed=tuple(
            sorted(
                n
                for n in differ
                if kinds.get(n) != FUNCTION or not same_code(machine, old.nodes[n], new.nodes[n], old.nodes, new.nodes)
            )
        ),
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        kinds=kinds,
    )


# The smallest object whose parsed form the cache keeps, to compare its unit's next build
# with: most units are small, and their parsed symbols would cost more memory than printing
# them again costs time.
KEPT_OBJECT_BYTES = 128 * 1024


class PrintCache:
    """``ObjectPrints`` per file, remembered by the file's identity (device, inode, size,
    modification time) and by a digest of its bytes: a unit rustc reused (hard-linked from
    its incremental directory, or written again with the same bytes) is not parsed again.

    It also keeps the latest parsed build of each codegen unit (``unit_key``): a unit rustc
    rewrote is compared with it section by section, and only what changed is printed again."""

    def __init__(self, max_files: int = 8192, keep_bytes: int = KEPT_OBJECT_BYTES) -> None:
        self.max_files = max_files
        self.keep_bytes = keep_bytes  # objects this large stay parsed, for their unit's next build
        self._by_identity: dict[tuple[int, int, int, int], str] = {}
        self._by_content: dict[str, tuple[ObjectPrints, ...]] = {}
        self._latest: dict[str, tuple[str, ElfObject, ObjectPrints]] = {}  # unit -> content, object, prints
        self._objects: dict[str, tuple[ElfObject, ...]] = {}  # content -> its objects, while the latest
        self._merged: dict[tuple[str, ...], Prints] = {}  # a few recent merges, by their files' contents
        self._snapshots: dict[tuple[str, ...], tuple[object, Prints]] = {}  # paths -> (snapshot, merged)
        self.parsed = 0  # files parsed (not found in the cache) since this cache was made

    def _content(self, path: str | Path) -> tuple[tuple[int, int, int, int], str | None]:
        info = os.stat(path)
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        return identity, self._by_identity.get(identity)

    def prints(self, path: str | Path) -> tuple[ObjectPrints, ...]:
        """The prints of an object file, or of each object member of an ``.rlib``."""
        return self._prints(path)[1]

    def _prints(self, path: str | Path) -> tuple[str, tuple[ObjectPrints, ...]]:
        identity, content = self._content(path)
        if content is not None and content in self._by_content:
            return content, self._by_content[content]
        data = Path(path).read_bytes()
        content = hashlib.blake2b(data, digest_size=16).hexdigest()
        found = self._by_content.get(content)
        if found is None:
            if data.startswith(b"!<arch>\n"):
                found = tuple(
                    self._member(f"{path}({name})", body)
                    for name, body in archive_members(data)
                    if name.endswith(".o") and body.startswith(b"\x7fELF")  # not lib.rmeta
                )
            else:
                found = (self._member(str(path), data, content),)
            self.parsed += 1
            self._by_content[content] = found
            while len(self._by_content) > self.max_files:
                del self._by_content[next(iter(self._by_content))]
        self._by_identity[identity] = content
        while len(self._by_identity) > 4 * self.max_files:
            del self._by_identity[next(iter(self._by_identity))]
        return content, found

    def _member(self, path: str, data: bytes, content: str | None = None) -> ObjectPrints:
        """One object's prints, known by its bytes: a patch's object that is byte for byte a
        member of the program's ``.rlib`` is not printed again."""
        content = content or hashlib.blake2b(data, digest_size=16).hexdigest()
        known = self._by_content.get(content)
        if known is not None and len(known) == 1:
            return known[0]
        latest = self._latest.get(unit_key(path))  # the unit's earlier build: its symbols, if unchanged
        obj = parse_object(data, path, latest[1] if latest is not None else None)
        prints = self._print(content, obj)
        self._by_content[content] = (prints,)
        if len(data) >= self.keep_bytes:
            self._objects[content] = (obj,)
        return prints

    def _print(self, content: str, obj: ElfObject) -> ObjectPrints:
        unit = unit_key(obj.path)
        earlier = self._latest.pop(unit, None)
        prints = object_prints(obj, earlier[1:] if earlier is not None else None)
        obj.forget_relocations()  # decoded again if asked for; kept, they would outweigh the bytes
        if earlier is not None and earlier[0] != content:
            self._objects.pop(earlier[0], None)  # no longer the latest build of its unit
        if len(obj.data) >= self.keep_bytes:  # a small unit is printed whole as fast as compared
            self._latest[unit] = (content, obj, prints)
        return prints

    def objects(self, path: str | Path) -> tuple[ElfObject, ...]:
        """The parsed objects of a file whose prints this cache made last for their units;
        other files are read and parsed again."""
        _, content = self._content(path)
        kept = self._objects.get(content) if content is not None else None
        if kept is not None:
            return kept
        return tuple(objects_in(Path(path).read_bytes(), str(path)))

    def merged(self, paths: Iterable[str | Path]) -> Prints:
        """The prints of ``paths`` merged; the same files' contents give the same ``Prints``
        (the running program's, asked for with every patch, are merged once)."""
        found = [self._prints(path) for path in paths]
        key = tuple(content for content, _ in found)
        merged = self._merged.pop(key, None)
        if merged is None:
            merged = merge(p for _, prints in found for p in prints)
        self._merged[key] = merged  # the newest last
        while len(self._merged) > 4:
            del self._merged[next(iter(self._merged))]
        return merged

    def merged_snapshot(self, snapshot: object, paths: Iterable[str | Path]) -> Prints:
        """``merged(paths)`` for files that stay as they are while ``snapshot`` lives (the
        running program's objects, checked once by the ``Baseline`` naming them): merged once
        per snapshot, and not looked at again (no ``stat`` per file and patch)."""
        key = tuple(str(path) for path in paths)
        found = self._snapshots.pop(key, None)
        merged = found[1] if found is not None and found[0] is snapshot else self.merged(key)
        self._snapshots[key] = (snapshot, merged)  # the snapshot kept alive: its identity stays its own
        while len(self._snapshots) > 4:
            del self._snapshots[next(iter(self._snapshots))]
        return merged
