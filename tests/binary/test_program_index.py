"""The program's side of verify: built once per binary, stored in the symbol cache, and giving
the same jump tables and load checks as the symbols it was built from."""

from __future__ import annotations

import shutil

import pytest

from daemon.binary.jump_table import compute_jump_table
from daemon.binary.load_check import check_loadable
from daemon.binary.program_index import build_index, decode_index, encode_index, program_index
from daemon.binary.symbol_cache import LazySymbols, SymbolCache, cache_key, disk_entry_path
from daemon.binary.symbols import DATA, DYNAMIC, FUNCTION, GLOBAL, LOCAL, STATIC, Symbol, SymbolTable, read_symbols
from tests.support.symbol_images import build_images


def sym(name, address, kind=FUNCTION, size=16, binding=GLOBAL, table=STATIC, defined=True, visibility="default"):
    return Symbol(name, name.split(".llvm.")[0], address, size, kind, binding, visibility, defined, 1, table)


def table(*symbols):
    return SymbolTable(path="img", format="elf", bits=64, little_endian=True, shared=False, symbols=tuple(symbols))


@pytest.fixture
def host_copy(tmp_path):
    path = tmp_path / "host"
    shutil.copy2(build_images().host, path)
    return path


def test_index_of_synthetic_symbols():
    index = build_index(
        table(
            sym("main", 0x1000),
            sym("one", 0x2000),
            sym("one", 0x2000, table=DYNAMIC),  # same name and address in both tables: one function
            sym("twice", 0x3000, binding=LOCAL),
            sym("twice", 0x3100, binding=LOCAL),
            sym("f.llvm.123", 0x4000),
            sym("COUNTER", 0x5000, kind=DATA, size=8, table=DYNAMIC),
            sym("GROWN", 0x6000, kind=DATA, size=8),
            sym("GROWN", 0x6100, kind=DATA, size=16),
            sym("hidden", 0x7000, table=DYNAMIC, visibility="hidden"),
            sym("memcpy@GLIBC_2.14", 0, table=DYNAMIC, defined=False),
        )
    )
    assert index.main_addresses == (0x1000,)
    assert index.functions == {"main": 0x1000, "one": 0x2000, "f": 0x4000, "hidden": 0x7000}
    assert index.ambiguous_functions == {"twice"}
    assert index.data_sizes == {"COUNTER": 8}  # GROWN has two sizes: never compared
    assert index.data_names == {"COUNTER", "GROWN"}
    # only what the dynamic table exports to other images, undefined imports excluded
    assert index.exported == {"one", "COUNTER"}
    assert index.static_symbols == 7


def test_real_index_round_trips_through_its_encoding():
    index = program_index(read_symbols(build_images().host))
    assert index.functions and index.exported and len(index.main_addresses) == 1
    again = decode_index(encode_index(index))
    assert again == index
    assert decode_index(encode_index(again)) == again


def test_damaged_index_is_refused():
    blob = encode_index(program_index(read_symbols(build_images().host)))
    with pytest.raises(ValueError):
        decode_index(blob[:-3])
    with pytest.raises(ValueError):
        decode_index(b"\x07" + blob[1:])


def test_index_is_built_once_per_table():
    host = read_symbols(build_images().host)
    assert program_index(host) is program_index(host)


def test_disk_cache_serves_verify_without_decoding_symbols(host_copy, tmp_path):
    images = build_images()
    cache_dir = tmp_path / "symbols"
    cold = SymbolCache()
    cold.load(host_copy, cache_dir)  # parse, index and write once
    cold.wait_for_writes()

    warm = SymbolCache().load(host_copy, cache_dir)  # a restarted daemon
    assert isinstance(warm.symbols, LazySymbols) and not warm.symbols.decoded

    fresh = read_symbols(host_copy)
    patch = read_symbols(images.patch)
    broken = read_symbols(images.broken)
    lib_path = str(images.patch)
    assert compute_jump_table(warm, patch, lib_path) == compute_jump_table(fresh, patch, lib_path)
    assert check_loadable(patch, warm) == check_loadable(patch, fresh)
    assert check_loadable(broken, warm) == check_loadable(broken, fresh)
    assert not check_loadable(broken, warm).ok
    assert not warm.symbols.decoded  # verify used only the stored index

    # the symbols themselves are still there, exactly, when something asks
    assert tuple(warm.symbols) == fresh.symbols
    assert warm == fresh


def test_damaged_symbol_columns_are_parsed_again(host_copy, tmp_path):
    cache_dir = tmp_path / "symbols"
    cache = SymbolCache()
    good = cache.load(host_copy, cache_dir)
    cache.wait_for_writes()
    entry = disk_entry_path(cache_dir, cache_key(host_copy))
    blob = bytearray(entry.read_bytes())
    blob[-5] ^= 0xFF  # inside the last column, read only when the symbols are
    entry.write_bytes(bytes(blob))
    again = SymbolCache().load(host_copy, cache_dir)
    assert again.symbols == good.symbols  # from the binary itself: the columns were refused
    assert program_index(again) == program_index(good)


def test_two_programs_keep_their_own_index_and_crate_functions():
    hot, cold = "_ZN4demo3hot17h0123456789abcdefE", "_ZN4demo4cold17h1111111111111111E"
    first = table(sym("main", 0x1000), sym(hot, 0x2000), sym("_ZN5other1f17h2222222222222222E", 0x3000))
    second = table(sym("main", 0x1000), sym(cold, 0x2000))
    assert program_index(first) is not program_index(second)
    assert program_index(first).functions_of_crate("demo") == {hot}
    assert program_index(second).functions_of_crate("demo") == {cold}
    assert program_index(first).functions_of_crate("other") == {"_ZN5other1f17h2222222222222222E"}
    assert program_index(second).functions_of_crate("other") == frozenset()
