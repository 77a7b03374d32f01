"""The running program's type layouts, read where a patch needs them.

Reading every type the program's objects describe takes seconds on a large program (the
first patch after a capture paid it). A changed function's types are described in the DWARF
of its own codegen unit, and the program was linked from a build of that same unit (the same
``unit_key``). So a patch's layouts are first compared with the program's build of the units
the patch's changed functions are in (``of_units``); only when that can't decide (a type
it does not describe, or a layout that differs from it, which another object might have
under the same name) is the whole table read (``complete``: ``layout.program_layouts``, kept
on disk). Reads files; each unit's table is read once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from daemon.analysis.layout import LayoutTable, program_layouts, type_layouts
from daemon.analysis.unchanged_sections import unit_key
from daemon.binary.elf_objects import archive_members, parse_object


class ProgramTypes:
    def __init__(self, paths: Iterable[str | Path], cache_dir: str | Path | None) -> None:
        self.paths = [Path(p) for p in paths]
        self.cache_dir = cache_dir
        self._complete: LayoutTable | None = None
        self._places: dict[str, list[tuple[Path, str | None]]] | None = None  # unit -> file, archive member
        self._units: dict[str, LayoutTable] = {}

    def complete(self) -> LayoutTable:
        """Every named type of the program (read once, then from the cache beside the capture)."""
        if self._complete is None:
            self._complete = program_layouts(self.paths, self.cache_dir)
        return self._complete

    def of_units(self, units: Iterable[str]) -> LayoutTable:
        """The types the program's build of ``units`` describes (a part of ``complete``)."""
        if self._complete is not None:
            return self._complete
        table = LayoutTable()
        for unit in sorted(set(units)):
            found = self._units.get(unit)
            if found is None:
                found = self._units[unit] = self._read(unit)
            for layout in found.layouts.values():
                table.add(layout)
            for choices in found.ambiguous.values():
                for layout in choices:
                    table.add(layout)
        return table

    def _read(self, unit: str) -> LayoutTable:
        objects = []
        for path, member in self._index().get(unit, []):
            data = path.read_bytes()
            if member is None:
                objects.append(parse_object(data, str(path)))
                continue
            for name, body in archive_members(data):
                if name == member:
                    objects.append(parse_object(body, f"{path}({name})"))
        return type_layouts(objects)

    def _index(self) -> dict[str, list[tuple[Path, str | None]]]:
        """Where each unit's object is: a file, or a member of an archive (names read once)."""
        if self._places is None:
            places: dict[str, list[tuple[Path, str | None]]] = {}
            for path in self.paths:
                with open(path, "rb") as head:
                    archive = head.read(8) == b"!<arch>\n"
                if not archive:
                    places.setdefault(unit_key(str(path)), []).append((path, None))
                    continue
                for name, body in archive_members(path.read_bytes()):
                    if name.endswith(".o") and body.startswith(b"\x7fELF"):
                        places.setdefault(unit_key(f"{path}({name})"), []).append((path, name))
            self._places = places
        return self._places
