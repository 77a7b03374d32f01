"""Panic locations: the ``core::panic::Location`` constants (file, line, column) code points at.

Lines added or removed above a function move its panics (an index, an ``unwrap``, an overflow
check) to other lines: the constants' line and column change, the code does not. A print
(``code_prints``) reads such a constant without its line and column, and the section
comparison (``unchanged_sections``) lets them differ, both by this one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon.binary.elf_objects import SHT_NOBITS, STT_SECTION, ElfObject, Relocation

SIZE = 24  # a &'static str (pointer and length), then line and column as u32
LINE_AND_COLUMN = slice(16, 24)
_LONGEST_FILE_NAME = 4096


def is_panic_location(obj: ElfObject, data: bytes, relocations: Sequence[Relocation], start: int = 0) -> bool:
    """Whether anonymous data of ``obj`` (its bytes, at ``start`` in its section, and the
    relocations that apply to them) is a ``core::panic::Location``: 24 bytes, one relocation
    at the start, pointing at a file name of the length that follows, a Rust source file. A
    constant of the same shape naming no ``.rs`` file keeps every byte in its print."""
    if len(data) != SIZE or len(relocations) != 1 or relocations[0].offset != start:
        return False
    length = int.from_bytes(data[8:16], "little")
    return 0 < length < _LONGEST_FILE_NAME and _pointed_at(obj, relocations[0], length).endswith(b".rs")


def _pointed_at(obj: ElfObject, relocation: Relocation, length: int) -> bytes:
    """The ``length`` bytes an absolute relocation points at in ``obj``, or b"" if it can't
    be told (undefined, or outside its section)."""
    if not 0 < relocation.symbol < len(obj.symbols):
        return b""
    symbol = obj.symbols[relocation.symbol]
    if not symbol.defined or symbol.section >= len(obj.sections):
        return b""
    section = obj.sections[symbol.section]
    start = relocation.addend + (0 if symbol.type == STT_SECTION else symbol.value)
    if section.type == SHT_NOBITS or start < 0 or start + length > section.size:
        return b""
    return obj.data[section.offset + start : section.offset + start + length]  # not a copy of the whole section


def without_line_and_column(data: bytes) -> bytes:
    """A panic location's bytes with its line and column zeroed."""
    return data[: LINE_AND_COLUMN.start] + bytes(LINE_AND_COLUMN.stop - LINE_AND_COLUMN.start)


def differ_in_line_and_column_only(earlier: bytes, now: bytes) -> bool:
    """Whether two panic locations' bytes are equal but for their line and column."""
    return len(earlier) == len(now) == SIZE and without_line_and_column(earlier) == without_line_and_column(now)
