"""Which statics patched code uses a copy of its own of, named in the patch report.

ELF: only the statics the patch defines privately (a library `pub static` binds to the
program's copy). Mach-O: every static the patch defines, because the compiler addresses a
static defined in the same image directly (pinned by tests/build/test_macos_patch_binding.py).
"""

from __future__ import annotations

import pytest

from daemon.binary.symbols import (
    DATA,
    ELF,
    FUNCTION,
    GLOBAL,
    HIDDEN,
    LOCAL,
    MACHO,
    STATIC,
    Symbol,
    SymbolTable,
    read_symbols,
)
from daemon.service.patcher import fresh_static_warning, fresh_statics
from tests.support.macho_images import build_macho_patch

APP_STATE = "_ZN3app5STATE17h0123456789abcdefE"  # app::STATE, a private static of the bin crate
LIB_COUNTER = "_ZN7gamelib7COUNTER17h1111111111111111E"  # gamelib::COUNTER, a `pub static`
LIB_LIMIT_V0 = "_RNvCs4NdopRQyXM3_7gamelib5LIMIT"  # gamelib::LIMIT, v0 mangling
LIB_VTABLE = "_ZN7gamelib6vtable17h2222222222222222E"
OTHER_STATIC = "_ZN5state4KEPT17h3333333333333333E"  # a crate that is not rebuilt
ONLY_IN_PATCH = "_ZN7gamelib3NEW17h4444444444444444E"  # added by the edit: nothing to keep
ANON = "anon.0123456789abcdef.0"


def sym(name, address, binding=GLOBAL, kind=DATA, size=8, visibility="default"):
    return Symbol(name, name, address, size, kind, binding, visibility, True, 1, STATIC)


def table(fmt, *symbols):
    prefix = "_" if fmt == MACHO else ""
    named = tuple(s._replace(name=prefix + s.name, normalised=prefix + s.normalised) for s in symbols)
    return SymbolTable(path="img", format=fmt, bits=64, little_endian=True, shared=False, symbols=named)


def images(fmt, patch_binding=GLOBAL):
    host = table(
        fmt,
        sym(APP_STATE, 0x5000, binding=LOCAL),
        sym(LIB_COUNTER, 0x5008),
        sym(LIB_LIMIT_V0, 0x5010),
        sym(LIB_VTABLE, 0x5018, size=24),
        sym(OTHER_STATIC, 0x5030),
        sym(ANON, 0x5038, binding=LOCAL),
        sym("_ZN7gamelib8describe17h5555555555555555E", 0x1000, kind=FUNCTION),
    )
    patch = table(
        fmt,
        sym(APP_STATE, 0x3000, binding=LOCAL),
        sym(LIB_COUNTER, 0x3008, binding=patch_binding),
        sym(LIB_LIMIT_V0, 0x3010, binding=LOCAL, visibility=HIDDEN),
        sym(LIB_VTABLE, 0x3018, size=24, binding=LOCAL),
        sym(OTHER_STATIC, 0x3030, binding=LOCAL),
        sym(ANON, 0x3038, binding=LOCAL),
        sym(ONLY_IN_PATCH, 0x3040, binding=LOCAL),
        sym("_ZN7gamelib8describe17h5555555555555555E", 0x400, kind=FUNCTION, binding=LOCAL),
    )
    return host, patch


def test_elf_lists_only_private_statics_of_rebuilt_crates():
    host, patch = images(ELF)
    assert fresh_statics(host, patch, {"app", "gamelib"}) == ["app::STATE", "gamelib::LIMIT"]
    # the library's global `pub static COUNTER` binds to the program's copy: not listed
    assert fresh_statics(host, patch, {"app"}) == ["app::STATE"]


def test_macho_lists_every_static_the_patch_defines_global_or_not():
    host, patch = images(MACHO)
    assert patch.lookup("__ZN7gamelib7COUNTER17h1111111111111111E")  # spelt with Mach-O's underscore
    # vtables, compiler constants and statics the edit added are left out
    assert fresh_statics(host, patch, {"app", "gamelib", "state"}) == [
        "app::STATE", "gamelib::COUNTER", "gamelib::LIMIT", "state::KEPT"
    ]


def test_macho_lists_only_crates_the_patch_rebuilt():
    host, patch = images(MACHO)
    assert fresh_statics(host, patch, {"gamelib"}) == ["gamelib::COUNTER", "gamelib::LIMIT"]
    assert fresh_statics(host, patch, set()) == []


def test_a_static_of_zero_size_is_left_out():
    host, patch = images(MACHO)
    patch = table(MACHO, *(s._replace(name=s.name[1:], normalised=s.normalised[1:], size=0) for s in patch.symbols))
    assert fresh_statics(host, patch, {"app", "gamelib"}) == []


def test_warnings_name_the_fix_for_each_platform():
    macos = fresh_static_warning("gamelib::COUNTER", MACHO)
    assert "`gamelib::COUNTER`" in macos and "macOS" in macos
    assert "crate that is not rebuilt" in macos and "restart the program" in macos
    linux = fresh_static_warning("app::STATE", ELF)
    assert "`app::STATE` is a private static of a binary crate" in linux and "library crate" in linux


def test_a_real_macho_patch_names_the_library_static_it_rebuilt():
    built = build_macho_patch()
    if isinstance(built, str):
        pytest.skip(f"no Mach-O toolchain: {built}")
    host, patch = read_symbols(built.program), read_symbols(built.patch)
    assert host.format == patch.format == MACHO
    # COUNTER is global in both images and still gets a fresh copy; KEPT stays the program's
    assert fresh_statics(host, patch, {"gamelib", "state"}) == ["gamelib::COUNTER"]
