"""The section reader on real rustc output: an object file and an rlib."""

import subprocess
from pathlib import Path

import pytest

from daemon.binary.elf_objects import (
    STT_FUNC,
    ObjectFormatError,
    archive_members,
    object_files,
    parse_object,
    read_object,
)

SOURCE = """
pub struct Player { pub x: u32, pub name: String }
pub fn helper(p: &Player) -> u32 { p.x + 1 }
pub fn frame(p: &mut Player) -> String { p.x = helper(p); format!("{} at {}", p.name, p.x) }
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("elf")
    (out / "lib.rs").write_text(SOURCE)
    common = ["rustc", "--crate-type", "rlib", "--edition", "2021", "-g", "lib.rs"]
    subprocess.run([*common, "--emit=obj", "-o", "lib.o"], cwd=out, check=True)
    subprocess.run([*common, "-C", "codegen-units=4", "-o", "liblib.rlib"], cwd=out, check=True)
    return out


def test_each_function_has_its_section_and_its_calls_are_relocations(built: Path) -> None:
    obj = read_object(built / "lib.o")
    assert obj.relocatable
    frame = next(s for s in obj.symbols if s.type == STT_FUNC and "5frame" in s.name)
    section = obj.sections[frame.section]
    assert section.executable and section.size == frame.size
    targets = {obj.symbols[r.symbol].name for r in obj.relocations(section)}
    assert any("6helper" in t for t in targets), targets


def test_debug_sections_read_with_their_relocations_applied(built: Path) -> None:
    obj = read_object(built / "lib.o")
    raw = obj.section_data(obj.section_named(".debug_info"))
    relocated = obj.relocated(".debug_info")
    assert relocated is not None and len(relocated) == len(raw) and relocated != raw
    assert obj.relocated(".no-such-section") is None


def test_an_rlibs_object_members_with_their_long_names(built: Path) -> None:
    names = [name for name, _ in archive_members((built / "liblib.rlib").read_bytes())]
    assert "lib.rmeta" in names
    objects = [o.path for o in object_files(built / "liblib.rlib")]
    assert len(objects) == 4 and all(p.endswith(".rcgu.o)") for p in objects), objects


def test_what_is_not_elf_is_said() -> None:
    with pytest.raises(ObjectFormatError, match="not an ELF file"):
        parse_object(b"MZ\x90\x00" * 20, "x.exe")
    with pytest.raises(ObjectFormatError, match="not an ar archive"):
        list(archive_members(b"garbage"))
