"""The patch reader: its table, index, imports and statics are those of the general reader
(``read_symbols(path, dynamic=False)`` then ``program_index``), on real patch libraries and on
synthetic layouts; images it doesn't read itself go to the general reader."""

from __future__ import annotations

import pytest

from daemon.binary.jump_table import compute_jump_table
from daemon.binary.load_check import check_loadable, loaded_library_paths
from daemon.binary.patch_symbols import read_patch_symbols
from daemon.binary.program_index import build_index, program_index
from daemon.binary.symbol_cache import LazySymbols
from daemon.binary.symbols import DATA, FormatError, read_symbols
from tests.support.symbol_images import FakeSymbol, build_elf, build_images, build_macho


def assert_same_as_general_reader(path):
    fast, full = read_patch_symbols(path), read_symbols(path, dynamic=False)
    assert program_index(fast) == build_index(full)
    assert list(fast.imports()) == list(full.imports())
    assert list(fast.defined(DATA)) == list(full.defined(DATA))
    header = ("path", "format", "bits", "little_endian", "shared", "needed", "soname", "runpath", "rpath")
    assert [getattr(fast, a) for a in header] == [getattr(full, a) for a in header]
    assert len(fast.symbols) == len(full.symbols)
    assert tuple(fast.symbols) == tuple(full.symbols)  # decoded on demand, the same list
    return fast


@pytest.mark.parametrize("which", ["patch", "broken", "host", "clib"])
def test_real_images_read_as_the_general_reader_reads_them(which):
    assert_same_as_general_reader(getattr(build_images(), which))


def test_verify_needs_no_decoded_symbols_and_gets_the_same_answers():
    images = build_images()
    host = read_symbols(images.host)
    libs = [read_symbols(p) for p in loaded_library_paths(host, images.host, read_symbols, env={})[0]]
    for path in (images.patch, images.broken):
        fast, full = read_patch_symbols(path), read_symbols(path, dynamic=False)
        lib = str(path)
        assert compute_jump_table(host, fast, lib, ["host"]) == compute_jump_table(host, full, lib, ["host"])
        assert check_loadable(fast, host, libs) == check_loadable(full, host, libs)
        assert isinstance(fast.symbols, LazySymbols)
        # every import of the good patch is exported elsewhere: its own symbols stay unread
        assert fast.symbols.decoded == (path == images.broken)
    assert not check_loadable(read_patch_symbols(images.broken), host, libs).ok


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("little", [True, False])
def test_synthetic_layouts(tmp_path, bits, little):
    path = tmp_path / "lib.so"
    path.write_bytes(
        build_elf(
            bits,
            little,
            [
                FakeSymbol("main", 0x1000, 16, 2, 1, 1),
                FakeSymbol("twice", 0x1100, 16, 2, 0, 1),
                FakeSymbol("twice", 0x1200, 16, 2, 0, 1),
                FakeSymbol("obj", 0x2000, 8, 1, 0, 2),
                FakeSymbol("grown", 0x2100, 8, 1, 0, 2),
                FakeSymbol("grown", 0x2200, 16, 1, 0, 2),
                FakeSymbol("tls", 0x10, 4, 6, 2, 3, other=2),
                FakeSymbol("undef", 0, 0, 0, 1, 0),
                FakeSymbol("weak_undef", 0, 0, 2, 2, 0),
                FakeSymbol("", 0, 0, 0, 0, 0),
                FakeSymbol("_ZN4demo3hot17h0123456789abcdefE.llvm.12345", 0x1300, 4, 2, 0, 1),
                FakeSymbol("caf\u00e9", 0x1400, 4, 2, 0, 1),
            ],
            needed=["libc.so.6"],
            soname="libx.so",
        )
    )
    fast = assert_same_as_general_reader(path)
    index = program_index(fast)
    assert index.ambiguous_functions == {"twice"} and "_ZN4demo3hot17h0123456789abcdefE" in index.functions
    assert [s.name for s in fast.imports()] == ["undef", "weak_undef"]


def test_other_images_go_to_the_general_reader(tmp_path):
    macho = tmp_path / "patch.dylib"
    macho.write_bytes(build_macho([("_main", 0x0F, 1, 0, 0x1000), ("_printf", 0x01, 0, 0x0100, 0)], dylibs=[]))
    assert read_patch_symbols(macho) == read_symbols(macho, dynamic=False)
    assert [s.name for s in read_patch_symbols(macho).imports()] == ["_printf"]
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(FormatError):
        read_patch_symbols(tmp_path / "empty")
    (tmp_path / "text").write_bytes(b"not an image")
    with pytest.raises(FormatError):
        read_patch_symbols(tmp_path / "text")
