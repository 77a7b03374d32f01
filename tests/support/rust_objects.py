"""Compile tiny Rust crates to rlibs in a test's temporary directory, as cargo's dev profile
would (debug info, several codegen units, edition 2021), and read their objects."""

from __future__ import annotations

import subprocess
from pathlib import Path

from daemon.binary.elf_objects import ElfObject, object_files


def build_rlib(
    directory: Path,
    name: str,
    source: str,
    *,
    debuginfo: str | None = "2",
    dwarf_version: int | None = None,
    externs: dict[str, Path] | None = None,
    metadata: str | None = None,
) -> Path:
    """``source`` compiled as crate ``name`` into ``directory/lib<name>.rlib``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.rs").write_text(source)
    command = ["rustc", "--edition", "2021", "--crate-type", "rlib", "--crate-name", name, "-C", "codegen-units=4"]
    if debuginfo is not None:
        command += ["-C", f"debuginfo={debuginfo}"]
    if metadata is not None:  # as cargo tells two versions of one crate apart
        command += ["-C", f"metadata={metadata}"]
    if dwarf_version is not None:
        command += ["-C", f"dwarf-version={dwarf_version}"]
    for crate, path in (externs or {}).items():
        command += ["--extern", f"{crate}={path}", "-L", str(path.parent)]
    output = directory / f"lib{name}.rlib"
    command += ["-o", str(output), f"{name}.rs"]
    subprocess.run(command, cwd=directory, check=True, capture_output=True)
    return output


def objects(rlib: Path) -> list[ElfObject]:
    return list(object_files(rlib))


def function_symbol(objs: list[ElfObject], path: str) -> str:
    """The linkage name of the function whose legacy-mangled path is ``path`` (``app::frame``)."""
    mangled = "".join(f"{len(part)}{part}" for part in path.split("::"))
    names = {s.name for o in objs for s in o.symbols if s.defined and s.name.startswith(f"_ZN{mangled}17h")}
    assert len(names) == 1, f"{path}: {sorted(names)}"
    return names.pop()
