"""The section reader on real rustc output: an object file and an rlib."""

import subprocess
import types
from pathlib import Path

import pytest

from daemon.binary.elf_objects import (
    SHT_RELA,
    STT_FUNC,
    ObjectFormatError,
    archive_members,
    object_files,
    parse_object,
    read_object,
    relocation_symbols_and_addends,
    same_relocation_entries,
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


def test_the_symbols_relocations_name_read_without_decoding_them(built: Path) -> None:
    obj = read_object(built / "lib.o")
    named = [(obj.relocation_symbols(s), {r.symbol for r in obj.relocations(s)}) for s in obj.sections]
    assert all(fast == decoded for fast, decoded in named)
    assert sum(len(decoded) for _, decoded in named) > 50
    for section in obj.sections:
        pairs = relocation_symbols_and_addends(obj.relocation_bytes(section))
        assert pairs == [(r.symbol, r.addend) for r in obj.relocations(section)]


@pytest.mark.parametrize("byteorder", ["little", "big"])  # the host's: words cast, or entries unpacked
def test_relocation_entries_compared_through_a_symbol_map(built: Path, byteorder: str, monkeypatch) -> None:
    import daemon.binary.elf_objects as elf_objects

    monkeypatch.setattr(elf_objects, "sys", types.SimpleNamespace(byteorder=byteorder))
    obj = read_object(built / "lib.o")
    runs = [run for s in obj.sections for run in obj.relocation_bytes(s) if len(run[1]) >= 48]
    assert runs
    identity = {symbol.index: symbol.index for symbol in obj.symbols}
    for kind, raw in runs:
        size = 24 if kind == SHT_RELA else 16
        # every symbol one place further on in the new table: equal through the map back
        entries = [raw[i : i + size] for i in range(0, len(raw), size)]
        moved = b"".join(e[:12] + (int.from_bytes(e[12:16], "little") + 1).to_bytes(4, "little") + e[16:]
                         for e in entries)
        back = {index + 1: index for index in identity}
        assert same_relocation_entries(kind, raw, raw, identity)
        assert same_relocation_entries(kind, raw, moved, back)
        assert not same_relocation_entries(kind, raw, moved, identity)
        retyped = raw[:8] + bytes([raw[8] ^ 1]) + raw[9:]  # the first entry's type
        assert not same_relocation_entries(kind, raw, retyped, identity)


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


def test_symbol_names_are_readelfs_including_shared_tails_and_non_ascii(tmp_path: Path) -> None:
    # LLVM shares string tails (a function's name ends its ".text.<name>" section's), and an
    # export name may be any UTF-8: both are read as readelf reads them
    (tmp_path / "names.rs").write_text(SOURCE + '#[export_name = "grüße"]\npub extern "C" fn greet() -> u32 { 7 }\n')
    subprocess.run(["rustc", "--crate-type", "rlib", "--edition", "2021", "--emit=obj", "-o", "names.o", "names.rs"],
                   cwd=tmp_path, check=True)
    listing = subprocess.run(["readelf", "-sW", "names.o"], cwd=tmp_path, check=True, capture_output=True).stdout
    expected = {}
    for line in listing.decode("utf-8", "surrogateescape").splitlines():
        fields = line.split(None, 7)
        # readelf shows bytes beyond ASCII as its own escapes: those names are checked below
        if len(fields) == 8 and fields[0].rstrip(":").isdigit() and fields[7].isascii():
            expected[int(fields[0].rstrip(":"))] = fields[7]
    obj = read_object(tmp_path / "names.o")
    assert len(expected) > 10
    assert {i: obj.symbols[i].name for i in expected} == expected
    assert "grüße" in {s.name for s in obj.symbols}
    assert any(s.name == ".text.grüße" for s in obj.symbols)  # a section symbol, named by its section
