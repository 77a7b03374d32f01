"""Which sections of an object are exactly as in an earlier build of the same codegen unit?

rustc rewrites a whole unit's object when one function in it changes, but most of the unit's
functions come out byte for byte as before. A function whose print can't have changed need not
be printed again: ``UnchangedSections(earlier, now).same(index)`` says whether a section of
``now`` equals the section of that name in ``earlier`` in everything a print reads:

- its type, flags and bytes, and its relocation entries (offsets, types, symbols, addends:
  compared as raw bytes where the symbols kept their indices); a panic location that a print reads
  only as anonymous data may differ in its line and column, which the print leaves out
  (``panic_locations``): code that only moved to other lines is not printed again;
- each symbol those entries name: name, type, binding, value, size, and whether it is defined;
  where the print follows a symbol into the data it points at (a section symbol, anonymous
  data), that section too, the same way; or, for a sized datum in a section without
  relocations (a string in a mergeable section), only the datum's bytes;
- the symbols defined in the section (a print names a point in it by the symbol covering it).

Equal in all of these, a function's print is the same in both objects, whatever the rest of
the object holds. Anything that differs, even a renumbered anonymous constant, only means the
function is printed again. When both symbol tables (and their strings) are byte-identical, as
they usually are after an edited body, the symbol facts are known equal without comparing them
one by one. Otherwise each symbol is compared with its counterpart in the earlier table, of the
same name, type and binding, wherever it stands: an edit that adds a constant adds symbols to
the table, and every symbol after them moves to another index. Pure: two ``ElfObject``s in,
answers out.
"""

from __future__ import annotations

import os

from daemon.analysis.panic_locations import differ_in_line_and_column_only, is_panic_location
from daemon.binary.elf_objects import (
    SHN_LORESERVE,
    SHT_NOBITS,
    SHT_SYMTAB,
    STT_FUNC,
    STT_SECTION,
    STT_TLS,
    ElfObject,
    ObjSymbol,
    Section,
    relocation_symbols,
    relocation_symbols_and_addends,
    same_relocation_entries,
)

STB_LOCAL = 0
SHF_MERGE = 0x10
SHF_STRINGS = 0x20
_ANONYMOUS_PREFIXES = (".L", "anon.", "alloc_", "GCC_except_table")


def _mangled(name: str) -> bool:
    return name.startswith(("_ZN", "_R"))


def is_anonymous(symbol: ObjSymbol) -> bool:
    """Compiler-made data whose name means nothing between builds (numbered anew)."""
    if symbol.type == STT_SECTION:
        return True
    name = symbol.name
    if name.startswith(_ANONYMOUS_PREFIXES):
        return True
    return symbol.binding == STB_LOCAL and not _mangled(name)


def unit_key(path: str) -> str:
    """What names one codegen unit across builds (an archive member's name when ``path`` is
    ``lib.rlib(member)``): an incremental build's ``crate-<hash>.<unit>.<session>.rcgu.o``
    without its session tag, which changes with every build; other names (a non-incremental
    ``…-cgu.<N>.rcgu.o``, or any other object) as they are."""
    name = path[path.rindex("(") + 1 : -1] if path.endswith(")") and "(" in path else os.path.basename(path)
    if not name.endswith(".rcgu.o"):
        return name
    base = name[: -len(".rcgu.o")]
    parts = base.split(".")
    if len(parts) >= 3 and not parts[-2].endswith("-cgu"):
        return ".".join(parts[:-1])
    return base


def _symbol_facts(symbol: ObjSymbol) -> tuple[object, ...]:
    return (symbol.name, symbol.type, symbol.binding, symbol.value, symbol.size, 0 < symbol.section < SHN_LORESERVE)


class UnchangedSections:
    """Compares sections of ``now`` with the same-named sections of ``earlier``; memoised."""

    def __init__(self, earlier: ElfObject, now: ElfObject, *, shortcut: bool = True) -> None:
        """``shortcut=False`` compares every symbol even when the tables are equal (the
        general path, which the shortcut must agree with)."""
        self.earlier, self.now = earlier, now
        by_name: dict[str, int] = {}
        repeated: set[str] = set()
        for section in earlier.sections:
            if section.name in by_name:
                repeated.add(section.name)
            by_name[section.name] = section.index
        for name in repeated:  # a name given twice says nothing about which is which
            del by_name[name]
        self._earlier_index = by_name
        # Byte-identical symbol and string tables, and sections named and typed alike index for
        # index (usual when rustc rewrites a unit for an edited body): every symbol's facts are
        # equal in both, and so are the symbols each section defines.
        self.tables_equal = shortcut and _tables_equal(earlier, now)
        # Otherwise each symbol of ``now`` is compared with its counterpart in ``earlier``
        # (``_counterparts``): a symbol added to the table moves every later one to another index.
        self._counterpart = None if self.tables_equal else _counterparts(earlier, now)
        self._sections: dict[int, bool] = {}
        self._symbols: dict[int, bool] = {}
        # symbol indices found the same; with equal tables, those a print names alone from the start
        self._known_same: set[int] = set(now.made_of_symbols(_named_alone)) if self.tables_equal else set()
        self._merged = self._merged_section_symbols()

    def _merged_section_symbols(self) -> set[int]:
        """Section symbols (same index, same section name in both) of mergeable sections
        without relocations: a print reads only the piece a relocation points at."""
        found = set()
        old_symbols, new_symbols = self.earlier.symbols, self.now.symbols
        mergeable = {s.index for s in self.now.sections if s.flags & SHF_MERGE and not self.now.has_relocations(s)}
        for index in self.now.made_of_symbols(_section_symbols):
            old_index = self._earlier_symbol(index)
            if old_index is None or new_symbols[index].section not in mergeable:
                continue
            old, new = old_symbols[old_index], new_symbols[index]
            if new.type != STT_SECTION or old.type != STT_SECTION or not (new.defined and old.defined):
                continue
            old_section, new_section = self.earlier.sections[old.section], self.now.sections[new.section]
            if (
                new_section.flags & SHF_MERGE
                and (old_section.name, old_section.flags, old_section.type)
                == (new_section.name, new_section.flags, new_section.type)
                and not self.now.has_relocations(new_section)
                and not self.earlier.has_relocations(old_section)
            ):
                found.add(index)
        return found

    def same(self, index: int) -> bool:
        """Whether section ``index`` of ``now`` prints as its namesake in ``earlier``."""
        known = self._sections.get(index)
        if known is not None:
            return known
        self._sections[index] = True  # a cycle of data pointing at itself: equal unless shown otherwise
        result = self._compare(index)
        self._sections[index] = result
        return result

    def _compare(self, index: int) -> bool:
        if not 0 < index < len(self.now.sections):
            return False
        new = self.now.sections[index]
        old_index = self._earlier_index.get(new.name)
        if old_index is None:
            return False
        old = self.earlier.sections[old_index]
        if (old.type, old.flags, old.size) != (new.type, new.flags, new.size):
            return False
        old_data, new_data = self.earlier.section_data(old), self.now.section_data(new)
        if old_data != new_data and not self._moved_panic_location(new, old_data, new_data):
            return False
        relocations = self.now.relocation_bytes(new)
        if not self._same_relocations(old, new, relocations):
            return False
        if not (self.tables_equal and old_index == index) and not self._same_definitions(old_index, index):
            return False
        symbols = relocation_symbols(relocations)
        pieces = symbols & self._merged  # section symbols of mergeable data: compared where they are used
        for symbol in symbols - pieces - self._known_same:  # most were compared for an earlier section
            if not self._same_symbol(symbol):
                return False
        return not pieces or self._same_pieces(new, pieces)

    def _earlier_symbol(self, index: int) -> int | None:
        """The index in ``earlier`` of the symbol compared with symbol ``index`` of ``now``."""
        if self._counterpart is None:
            return index if index < len(self.earlier.symbols) else None
        return self._counterpart.get(index)

    def _same_relocations(self, old: Section, new: Section, relocations: tuple[tuple[int, bytes], ...]) -> bool:
        """Whether the relocations of ``new`` (``relocations``, its raw entries) are those of
        ``old`` in offsets, types and addends, each naming the counterpart of the symbol."""
        earlier = self.earlier.relocation_bytes(old)
        counterpart = self._counterpart
        if counterpart is None:
            return earlier == relocations
        if earlier == relocations and all(counterpart.get(s) == s for s in relocation_symbols(relocations)):
            return True  # the same entries, naming symbols at the same indices in both tables
        if [(kind, len(raw)) for kind, raw in earlier] != [(kind, len(raw)) for kind, raw in relocations]:
            return False
        return all(
            same_relocation_entries(kind, old_raw, new_raw, counterpart)
            for (kind, old_raw), (_, new_raw) in zip(earlier, relocations, strict=True)
        )

    def _same_definitions(self, old_index: int, index: int) -> bool:
        earlier = self.earlier.made_of_symbols(_defined_by_section)
        now = self.now.made_of_symbols(_defined_by_section)
        return _facts_of(earlier.get(old_index, [])) == _facts_of(now.get(index, []))

    def _moved_panic_location(self, section: Section, old_data: bytes, new_data: bytes) -> bool:
        """Whether ``section`` (its relocations still to be compared) holds one panic location
        that differs only in its line and column, and a print reads it only whole, as anonymous
        data: the one place ``code_prints`` leaves line and column out."""
        if section.executable or section.flags & SHF_MERGE or section.type == SHT_NOBITS:
            return False
        if not differ_in_line_and_column_only(old_data, new_data):
            return False
        if not is_panic_location(self.now, new_data, self.now.relocations(section)):
            return False
        defined = self.now.made_of_symbols(_defined_by_section).get(section.index, [])
        return all(_read_whole_as_anonymous(s, section.size) for s in defined)

    def _same_pieces(self, section: Section, symbols: set[int]) -> bool:
        """Whether each piece of mergeable data (one string, one constant) that a relocation
        of ``section`` points at through a section symbol in ``symbols`` is the same."""
        data: dict[int, tuple[Section, bytes, bytes]] = {}  # symbol -> its section, new and old bytes
        for symbol, addend in relocation_symbols_and_addends(self.now.relocation_bytes(section)):
            if symbol not in symbols:
                continue
            found = data.get(symbol)
            if found is None:
                target = self.now.sections[self.now.symbols[symbol].section]
                old_symbol = self._earlier_symbol(symbol)  # a counterpart: ``_merged`` has only those
                assert old_symbol is not None
                old = self.earlier.sections[self.earlier.symbols[old_symbol].section]
                found = data[symbol] = (target, self.now.section_data(target), self.earlier.section_data(old))
            target, new_data, old_data = found
            start, end = _piece(target, new_data, addend)
            if new_data[start:end] != old_data[start:end]:
                return False
        return True

    def _same_symbol(self, index: int) -> bool:
        known = self._symbols.get(index)
        if known is None:
            known = self._compare_symbol(index)
            self._symbols[index] = known
            if known:
                self._known_same.add(index)
        return known

    def _compare_symbol(self, index: int) -> bool:
        if index == 0:
            return True
        old_index = self._earlier_symbol(index)
        if index >= len(self.now.symbols) or old_index is None:
            return False
        old, new = self.earlier.symbols[old_index], self.now.symbols[index]
        if not self.tables_equal:  # (with equal tables, only anonymous data is asked about)
            if old != new and _symbol_facts(old) != _symbol_facts(new):  # equal tuples: equal facts
                return False
            if not new.defined or not is_anonymous(new):
                return True  # printed by its name alone
        old_section, new_section = self.earlier.sections[old.section], self.now.sections[new.section]
        if not self.tables_equal and old_section.name != new_section.name:
            return False
        if new.type != STT_SECTION and new.size > 0 and not self.now.has_relocations(new_section):
            # a sized datum without relocations (a string, a constant): the print reads its bytes only
            start, end = new.value, new.value + new.size
            return (
                (old_section.type, old_section.flags) == (new_section.type, new_section.flags)
                and not self.earlier.has_relocations(old_section)
                and self.earlier.section_data(old_section)[start:end] == self.now.section_data(new_section)[start:end]
            )
        return self.same(new.section)  # the print reads the data it points at


# The furthest a print looks past a relocation's addend for the piece it names (x86_64
# PC-relative fields point 4 bytes before it; 8 covers every bias ``code_prints`` adds).
_REACH = 8


def _piece(section: Section, data: bytes, addend: int) -> tuple[int, int]:
    """A byte range of a mergeable section holding every piece (string, or constant of
    ``.cstN``) a relocation with ``addend`` may name, whatever the relocation's bias."""
    if not data:
        return 0, 0
    low = max(0, min(addend, len(data) - 1))
    high = max(0, min(addend + _REACH, len(data) - 1))
    if section.flags & SHF_STRINGS:
        stop = data.find(b"\0", high)
        return data.rfind(b"\0", 0, low) + 1, (stop + 1 if stop >= 0 else len(data))
    tail = section.name.rsplit(".cst", 1)
    entry = int(tail[1]) if len(tail) == 2 and tail[1].isdigit() and int(tail[1]) > 0 else 1
    return low - low % entry, min(high - high % entry + entry, len(data))


def _symbol_table(obj: ElfObject) -> tuple[bytes, bytes] | None:
    """The raw symbol table and its string table, or None without one."""
    symtab = next((s for s in obj.sections if s.type == SHT_SYMTAB), None)
    if symtab is None or not 0 < symtab.link < len(obj.sections):
        return None
    return obj.section_data(symtab), obj.section_data(obj.sections[symtab.link])


def _tables_equal(earlier: ElfObject, now: ElfObject) -> bool:
    """Whether both objects have the same symbols, byte for byte, in sections of the same
    name, type and flags at the same indices (symbol values and sizes are in the table)."""
    if len(earlier.sections) != len(now.sections) or len(earlier.symbols) != len(now.symbols):
        return False
    if any((a.name, a.type, a.flags) != (b.name, b.type, b.flags) for a, b in zip(earlier.sections, now.sections)):
        return False
    tables = _symbol_table(earlier)
    return tables is not None and tables == _symbol_table(now)


def _counterparts(earlier: ElfObject, now: ElfObject) -> dict[int, int]:
    """Symbol index in ``now`` -> index in ``earlier`` of the symbol of the same name, type and
    binding, where each table has one such (rustc names a section symbol after its section;
    unnamed ones have none)."""
    old, new = earlier.made_of_symbols(_symbol_keys), now.made_of_symbols(_symbol_keys)
    found = {index: old[key] for key, index in new.items() if key in old}
    found[0] = 0  # no symbol
    return found


def _symbol_keys(symbols: list[ObjSymbol]) -> dict[tuple[str, int, int], int]:
    found: dict[tuple[str, int, int], int] = {}
    repeated = set()
    for s in symbols:
        key = (s.name, s.type, s.binding)
        if key in found:
            repeated.add(key)
        found[key] = s.index
    for key in repeated:  # a key given twice says nothing about which is which
        del found[key]
    return found


def _named_alone(symbols: list[ObjSymbol]) -> frozenset[int]:
    """The symbols a print refers to by their name only: undefined, or defined and not
    anonymous (``is_anonymous``, written out: this runs for every symbol of a large unit)."""
    return frozenset(
        s.index
        for s in symbols
        if not 0 < s.section < SHN_LORESERVE
        or not (
            s.type == STT_SECTION
            or s.name.startswith(_ANONYMOUS_PREFIXES)
            or (s.binding == STB_LOCAL and not s.name.startswith(("_ZN", "_R")))
        )
    )


def _section_symbols(symbols: list[ObjSymbol]) -> tuple[int, ...]:
    return tuple(s.index for s in symbols if s.type == STT_SECTION)


def _defined_by_section(symbols: list[ObjSymbol]) -> dict[int, list[ObjSymbol]]:
    found: dict[int, list[ObjSymbol]] = {}
    for symbol in symbols:
        if symbol.type != STT_SECTION and 0 < symbol.section < SHN_LORESERVE:
            found.setdefault(symbol.section, []).append(symbol)
    return found


def _read_whole_as_anonymous(symbol: ObjSymbol, section_size: int) -> bool:
    """Whether a print reads the section defining ``symbol`` whole, as anonymous data, where it
    points at ``symbol``: not a function, thread-local or named static (printed as they are),
    nor a datum covering only part of the section."""
    if symbol.type in (STT_FUNC, STT_TLS) or not is_anonymous(symbol):
        return False
    return symbol.size == 0 or (symbol.value == 0 and symbol.size == section_size)


def _facts_of(symbols: list[ObjSymbol]) -> list[tuple[object, ...]]:
    return sorted((s.name, s.type, s.binding, s.value, s.size) for s in symbols)
