"""Symbol-table reader: real images checked against nm/readelf, synthetic ones for the layouts
(32-bit, big-endian, Mach-O) this machine does not produce."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess

import pytest

from daemon.binary.program_index import base_name
from daemon.binary.symbols import (
    DATA,
    DYNAMIC,
    FUNCTION,
    GLOBAL,
    HIDDEN,
    LOCAL,
    MACHO,
    OTHER,
    STATIC,
    TLS,
    WEAK,
    FormatError,
    _elf_symbols,
    _Section,
    normalise_name,
    parse_symbols,
    read_symbols,
)
from tests.support.symbol_images import FakeSymbol, build_elf, build_images, build_macho

needs_binutils = pytest.mark.skipif(shutil.which("nm") is None or shutil.which("readelf") is None,
                                    reason="binutils not installed")

_NM_LINE = re.compile(r"^([0-9a-f]+)?\s+([A-Za-z?-])\s+(.*)$")


def nm_symbols(path, *flags) -> set[tuple[str, int, str]]:
    out = subprocess.run(["nm", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    result = set()
    for line in out.splitlines():
        m = _NM_LINE.match(line)
        if m and m.group(3):
            result.add((m.group(3), int(m.group(1) or "0", 16), m.group(2)))
    return result


def _binding_of(letter: str) -> str | None:
    if letter in "wWvV":
        return WEAK
    if letter == "U":
        return GLOBAL
    return GLOBAL if letter.isupper() else LOCAL


@needs_binutils
@pytest.mark.parametrize("image", ["host", "patch", "clib"])
def test_static_table_matches_nm(image):
    path = getattr(build_images(), image)
    table = read_symbols(path)
    expected = nm_symbols(path, "-a")
    ours = {s for s in table.symbols if s.table == STATIC and s.name}
    assert {(s.name, s.address) for s in ours} == {(n, a) for n, a, _ in expected}
    by_key = {(s.name, s.address): s for s in ours}
    for name, address, letter in expected:
        s = by_key[(name, address)]
        assert s.defined == (letter not in "Uwv"), (name, letter)
        if letter not in "aA":  # nm prints file/absolute symbols with their own letters
            assert s.binding == _binding_of(letter), (name, letter, s.binding)


@needs_binutils
@pytest.mark.parametrize("image", ["host", "patch", "clib"])
def test_dynamic_table_matches_nm_with_versions(image):
    path = getattr(build_images(), image)
    table = read_symbols(path)
    expected = nm_symbols(path, "-D")
    ours = [s for s in table.symbols if s.table == DYNAMIC]
    assert {(s.name, s.address) for s in ours} == {(n.split("@")[0], a) for n, a, _ in expected}
    versions = {s.name: s.version for s in ours}
    for name, _, _ in expected:
        if "@" in name:
            base, version = re.split(r"@+", name, maxsplit=1)
            assert versions[base] == version, name


@needs_binutils
def test_dynamic_section_entries_match_readelf():
    images = build_images()
    for path in (images.host, images.clib):
        table = read_symbols(path)
        out = subprocess.run(["readelf", "-dW", str(path)], capture_output=True, text=True, check=True).stdout
        assert list(table.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", out)
        sonames = re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", out)
        assert table.soname == (sonames[0] if sonames else None)
        runpaths = re.findall(r"\(RUNPATH\)\s+Library runpath: \[(.*)\]", out)
        assert list(table.runpath) == (runpaths[0].split(":") if runpaths else [])
    clib = read_symbols(images.clib)
    assert clib.soname == "libdemo.so.1"
    assert clib.runpath == ("$ORIGIN/private", "/opt/demo")
    assert clib.shared


def test_kinds_bindings_and_exports_of_a_c_library():
    table = read_symbols(build_images().clib)
    dynamic = {s.name: s for s in table.in_table(DYNAMIC)}
    assert dynamic["demo_add"].kind == FUNCTION and dynamic["demo_add"].defined
    assert dynamic["demo_value"].kind == DATA and dynamic["demo_value"].size == 4
    assert dynamic["demo_tls"].kind == TLS
    assert dynamic["demo_weak"].binding == WEAK
    assert dynamic["__tls_get_addr"].version == "GLIBC_2.3" and not dynamic["__tls_get_addr"].defined
    exported = {s.name for s in table.exported()}
    assert {"demo_add", "demo_value", "demo_tls", "demo_weak", "demo_call_local"} <= exported
    assert "demo_local" not in exported  # a static function: in .symtab only, local
    local = table.lookup("demo_local")
    assert [(s.table, s.binding, s.kind) for s in local] == [(STATIC, LOCAL, FUNCTION)]
    assert "__tls_get_addr" in {s.name for s in table.imports()}


def test_rust_host_exports_main_and_its_statics():
    table = read_symbols(build_images().host)
    mains = [s for s in table.lookup("main") if s.table == DYNAMIC]
    assert len(mains) == 1 and mains[0].kind == FUNCTION and mains[0].binding == GLOBAL
    assert [s.size for s in table.lookup("TABLE")] == [32, 32]  # [u64; 4] in both tables
    assert not table.shared or table.symbols  # a PIE is ET_DYN; either way it has symbols


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("little", [True, False])
def test_synthetic_elf_layouts(bits, little):
    data = build_elf(
        bits,
        little,
        [
            FakeSymbol("f", 0x1000, 16, 2, 1, 1),
            FakeSymbol("obj", 0x2000, 8, 1, 0, 2),
            FakeSymbol("tls", 0x10, 4, 6, 2, 3, other=2),
            FakeSymbol("undef", 0, 0, 0, 1, 0),
            FakeSymbol("_ZN4demo3hot17h0123456789abcdefE.llvm.12345", 0x1100, 4, 2, 0, 1),
        ],
        needed=["libc.so.6", "libm.so.6"],
        soname="libx.so",
    )
    table = parse_symbols(data, "x")
    assert table.bits == bits and table.little_endian == little
    assert table.needed == ("libc.so.6", "libm.so.6") and table.soname == "libx.so"
    rows = [(s.name, s.address, s.size, s.kind, s.binding, s.visibility, s.defined) for s in table.symbols]
    assert rows == [
        ("f", 0x1000, 16, FUNCTION, GLOBAL, "default", True),
        ("obj", 0x2000, 8, DATA, LOCAL, "default", True),
        ("tls", 0x10, 4, TLS, WEAK, HIDDEN, True),
        ("undef", 0, 0, OTHER, GLOBAL, "default", False),
        ("_ZN4demo3hot17h0123456789abcdefE.llvm.12345", 0x1100, 4, FUNCTION, LOCAL, "default", True),
    ]
    assert table.symbols[-1].normalised == "_ZN4demo3hot17h0123456789abcdefE"


def test_synthetic_macho():
    n_sect, n_ext, n_pext = 0x0E, 0x01, 0x10
    data = build_macho(
        [
            ("_main", n_sect | n_ext, 1, 0, 0x1000),
            ("__ZN4demo3hot17h0123456789abcdefE", n_sect, 1, 0, 0x1040),
            ("_TABLE", n_sect | n_ext, 2, 0, 0x1100),
            ("_hidden", n_sect | n_ext | n_pext, 1, 0, 0x10F0),
            ("_weakdef", n_sect | n_ext, 1, 0x80, 0x10F8),
            ("_printf", n_ext, 0, 0x0100, 0),
            ("debug-stab", 0x24, 1, 0, 0x1000),  # N_FUN stab: not a symbol
        ],
        dylibs=["/usr/lib/libSystem.B.dylib", "@rpath/libfoo.dylib"],
        rpaths=["@loader_path/../lib"],
    )
    table = parse_symbols(data, "a.out")
    assert table.format == MACHO and table.symbol_prefix == "_"
    assert table.needed == ("/usr/lib/libSystem.B.dylib", "@rpath/libfoo.dylib")
    assert table.runpath == ("@loader_path/../lib",)
    by_name = {s.name: s for s in table.symbols}
    assert "debug-stab" not in by_name
    assert by_name["_main"].kind == FUNCTION and by_name["_main"].size == 0x40  # up to the next symbol
    assert by_name["__ZN4demo3hot17h0123456789abcdefE"].binding == LOCAL
    assert by_name["_TABLE"].kind == DATA and by_name["_TABLE"].size == 0x40  # to the section end
    assert by_name["_hidden"].visibility == HIDDEN
    assert by_name["_weakdef"].binding == WEAK
    assert not by_name["_printf"].defined
    assert {s.name for s in table.exported()} == {"_main", "_TABLE", "_weakdef"}
    assert [s.name for s in table.imports()] == ["_printf"]


def test_not_an_image(tmp_path):
    bogus = tmp_path / "x.txt"
    bogus.write_text("hello")
    with pytest.raises(FormatError):
        read_symbols(bogus)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(FormatError):
        read_symbols(empty)


def test_normalise_name():
    assert normalise_name("_ZN1a1b17h0123456789abcdefE.llvm.987654321") == "_ZN1a1b17h0123456789abcdefE"
    assert normalise_name("foo.llvm.x") == "foo.llvm.x"
    assert normalise_name("foo.cold") == "foo.cold"


@pytest.mark.parametrize("image", ["patch", "clib"])
def test_a_library_read_from_its_static_table_alone_keeps_its_imports_and_definitions(image):
    # a freshly linked patch is read this way: its .dynsym only repeats .symtab's globals
    path = getattr(build_images(), image)
    both = read_symbols(path)
    static_only = read_symbols(path, dynamic=False)
    assert {s.table for s in static_only.symbols} == {STATIC}
    assert len(static_only.symbols) < len(both.symbols)
    # .symtab spells a versioned import `name@VERSION`; the load check compares base names
    imports = {base_name(s.name) for s in static_only.imports()}
    assert imports == {base_name(s.name) for s in both.imports()} != set()
    assert {(s.name, s.address) for s in static_only.defined()} == {(s.name, s.address) for s in both.defined()}


@pytest.mark.skipif(shutil.which("strip") is None, reason="binutils not installed")
def test_a_library_without_a_static_table_is_read_from_its_dynamic_one(tmp_path):
    stripped = tmp_path / "libdemo.so"
    shutil.copy(build_images().clib, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    table = read_symbols(stripped, dynamic=False)
    assert {s.table for s in table.symbols} == {DYNAMIC}
    assert "demo_add" in {s.name for s in table.exported()}


def test_extended_section_indices_and_versions_belong_to_their_symbols():
    """Files with more than 0xff00 sections keep the real index in SHT_SYMTAB_SHNDX (one entry
    per symbol, the null one included); .gnu.version has one version per dynamic symbol."""
    entry = struct.Struct("<IBBHQQ")
    strtab = b"\0f\0g\0h\0"
    raw = b"".join(
        [
            entry.pack(0, 0, 0, 0, 0, 0),  # the null symbol
            entry.pack(1, 0x12, 0, 0xFFFF, 0x1000, 4),  # its index is in the extended table
            entry.pack(3, 0x12, 0, 5, 0x2000, 4),
            entry.pack(5, 0x12, 0, 0xFFFF, 0, 0),  # past the end of the extended table
        ]
    )
    section = _Section(2, 0, len(raw), 0, 0, entry.size)
    symbols = _elf_symbols(raw, section, strtab, 64, "<", STATIC, None, [0, 70000, 0])
    assert [(s.name, s.section_index, s.defined) for s in symbols] == [
        ("f", 70000, True),
        ("g", 5, True),
        ("h", 0xFFFF, True),
    ]
    symbols = _elf_symbols(raw, section, strtab, 64, "<", DYNAMIC, [None, "V1", None], None)
    assert [(s.name, s.version) for s in symbols] == [("f", "V1"), ("g", None), ("h", None)]
