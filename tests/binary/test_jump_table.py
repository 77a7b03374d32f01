"""Jump tables: subsecond's JSON shape, the mapping rules on synthetic tables, and a real
host/patch pair checked against nm."""

from __future__ import annotations

import json
import subprocess

import pytest

from daemon.binary.jump_table import JumpTable, JumpTableError, compute_jump_table, crate_of
from daemon.binary.symbols import (
    DATA,
    DYNAMIC,
    ELF,
    FUNCTION,
    GLOBAL,
    LOCAL,
    MACHO,
    STATIC,
    TLS,
    Symbol,
    SymbolTable,
    read_symbols,
)
from tests.support.symbol_images import build_images


def sym(name, address, kind=FUNCTION, size=16, binding=GLOBAL, table=STATIC, defined=True):
    return Symbol(name, name.split(".llvm.")[0], address, size, kind, binding, "default", defined, 1 if defined else 0,
                  table)


def table(*symbols, fmt=ELF):
    return SymbolTable(path="img", format=fmt, bits=64, little_endian=True, shared=False, symbols=tuple(symbols))


HOT = "_ZN4demo3hot17h0123456789abcdefE"
COLD = "_ZN4demo4cold17h1111111111111111E"
GONE = "_ZN4demo4gone17h2222222222222222E"
NEW = "_ZN4demo3new17h3333333333333333E"
STD_ONLY = "_RNvNtCs1_3std2io5stdin"


def test_json_has_exactly_subsecond_fields_with_string_keys():
    jt = JumpTable(lib="/tmp/libpatch-1.so", map={4096: 8192, 18446744073709551615: 1}, aslr_reference=4096,
                   new_base_address=8192)
    data = json.loads(json.dumps(jt.to_json()))
    assert set(data) == {"lib", "map", "aslr_reference", "new_base_address", "ifunc_count"}
    assert data["map"] == {"4096": 8192, "18446744073709551615": 1}
    assert data["ifunc_count"] == 0
    assert JumpTable.from_json(data) == jt


def test_mapping_report_and_main_addresses():
    host = table(
        sym("main", 0x1000), sym("main", 0x1000, table=DYNAMIC),
        sym(HOT, 0x2000), sym(HOT, 0x2000, table=DYNAMIC),
        sym(COLD + ".llvm.42", 0x3000), sym(GONE, 0x4000), sym(STD_ONLY, 0x5000),
        sym("_ZN4demo5STATE17h4444444444444444E", 0x9000, kind=DATA, size=8),
        sym("_ZN4demo4KEEP17h5555555555555555E", 0x9100, kind=DATA, size=4),
        sym("_ZN4demo3TLS17h6666666666666666E", 0x10, kind=TLS, size=8),
        sym("printf", 0, defined=False),
    )
    patch = table(
        sym("main", 0x500), sym(HOT, 0x600), sym(COLD + ".llvm.77", 0x700), sym(NEW, 0x800),
        sym("_ZN4demo5STATE17h4444444444444444E", 0x900, kind=DATA, size=16),
        sym("_ZN4demo4KEEP17h5555555555555555E", 0x910, kind=DATA, size=4),
        sym("_ZN4demo3TLS17h6666666666666666E", 0x20, kind=TLS, size=4),
        sym("printf", 0, defined=False),
    )
    jt, report = compute_jump_table(host, patch, "/p/libpatch-1.so")
    assert jt.lib == "/p/libpatch-1.so"
    assert jt.aslr_reference == 0x1000 and jt.new_base_address == 0x500
    assert jt.map == {0x1000: 0x500, 0x2000: 0x600, 0x3000: 0x700}  # .llvm.N suffixes ignored
    assert report.mapped == 3
    assert report.added == ["demo::new"]
    assert report.removed == ["demo::gone"]  # std::io::stdin is not the patched crate's
    assert [(c.name, c.old_size, c.new_size) for c in report.data_size_changes] == [
        ("demo::STATE", 8, 16), ("demo::TLS", 8, 4)]
    assert len(report.warnings) == 2 and "demo::STATE" in report.warnings[0]
    assert report.skipped_ambiguous == []


def test_crate_names_limit_removed():
    host = table(sym("main", 1), sym(GONE, 2), sym("_ZN5other4gone17h7777777777777777E", 3))
    patch = table(sym("main", 10))
    assert compute_jump_table(host, patch, "l", crate_names=["other"])[1].removed == ["other::gone"]
    assert compute_jump_table(host, patch, "l", crate_names=[])[1].removed == []


def test_duplicate_local_names_are_skipped_not_guessed():
    # Two local functions share one mangled name in the host: which one the patch's copy
    # replaces is unknowable from names, so neither is mapped.
    dup = "_ZN4demo6helper17h8888888888888888E"
    host = table(sym("main", 1), sym(dup, 0x100, binding=LOCAL), sym(dup, 0x200, binding=LOCAL), sym(HOT, 0x300))
    patch = table(sym("main", 10), sym(dup, 0x1000, binding=LOCAL), sym(HOT, 0x3000))
    jt, report = compute_jump_table(host, patch, "l")
    assert jt.map == {1: 10, 0x300: 0x3000}
    assert report.skipped_ambiguous == ["demo::helper"]
    # Duplicates in the patch are skipped the same way.
    jt, report = compute_jump_table(table(sym("main", 1), sym(dup, 0x100)),
                                    table(sym("main", 10), sym(dup, 0x1000), sym(dup, 0x2000)), "l")
    assert jt.map == {1: 10} and report.skipped_ambiguous == ["demo::helper"]


def test_main_is_required_in_both_images():
    with pytest.raises(JumpTableError, match="patch"):
        compute_jump_table(table(sym("main", 1)), table(sym(HOT, 2)), "l")
    with pytest.raises(JumpTableError, match="running binary"):
        compute_jump_table(table(sym(HOT, 1)), table(sym("main", 2)), "l")
    with pytest.raises(JumpTableError):
        compute_jump_table(table(sym("main", 1), sym("main", 5)), table(sym("main", 2)), "l")


def test_macho_uses_underscore_main():
    host = table(sym("_main", 0x100000400), sym("__ZN4demo3hot17h0123456789abcdefE", 0x100000800), fmt=MACHO)
    patch = table(sym("_main", 0x4000), sym("__ZN4demo3hot17h0123456789abcdefE", 0x4100), fmt=MACHO)
    jt, _ = compute_jump_table(host, patch, "libpatch.dylib")
    assert (jt.aslr_reference, jt.new_base_address) == (0x100000400, 0x4000)
    assert jt.map[0x100000800] == 0x4100


def test_crate_of():
    assert crate_of("demo::hot") == "demo"
    assert crate_of("<demo::S as core::fmt::Debug>::fmt") == "demo"
    assert crate_of("<&mut demo::S>::f") == "demo"
    assert crate_of("demo[1a2b]::main") == "demo"
    assert crate_of("main") == "main"
    assert crate_of("<[u8]>::len") is None  # primitive impls belong to no crate


def nm_address(path, name):
    out = subprocess.run(["nm", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == name:
            return int(fields[0], 16)
    raise KeyError(name)


def test_real_host_and_patch():
    images = build_images()
    host, patch = read_symbols(images.host), read_symbols(images.patch)
    jt, report = compute_jump_table(host, patch, str(images.patch), crate_names=["host"])
    hot = next(s.name for s in host.symbols if s.name.startswith("_ZN4host3hot"))
    assert jt.map[nm_address(images.host, hot)] == nm_address(images.patch, hot)
    assert jt.aslr_reference == nm_address(images.host, "main")
    assert jt.new_base_address == nm_address(images.patch, "main")
    assert jt.map[jt.aslr_reference] == jt.new_base_address  # `main` itself maps too, as in subsecond
    assert report.mapped == len(jt.map) >= 3
    # TABLE grew from [u64; 4] to [u64; 6]: a layout change the report must flag.
    assert [(c.name, c.old_size, c.new_size) for c in report.data_size_changes] == [("TABLE", 32, 48)]
    # The new std::env::args call pulls in instantiations the host never had.
    assert any("Args" in name for name in report.added)
    assert report.removed == []
    json.dumps(jt.to_json())
