"""Load verification: synthetic tables for the rules, a real patch with a missing symbol, and
the loader-like library search."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from daemon.binary.load_check import (
    RECAPTURE_ACTION,
    LibraryPathCache,
    check_loadable,
    find_library,
    library_search_dirs,
    loaded_library_paths,
    read_ld_so_conf,
)
from daemon.binary.symbols import DYNAMIC, ELF, FUNCTION, GLOBAL, MACHO, STATIC, WEAK, Symbol, SymbolTable, read_symbols
from tests.support.symbol_images import build_images


def sym(name, defined=True, binding=GLOBAL, table=DYNAMIC, version=None, visibility="default"):
    return Symbol(name, name, 0x100 if defined else 0, 8, FUNCTION, binding, visibility, defined,
                  1 if defined else 0, table, version)


def table(*symbols, needed=(), runpath=(), rpath=(), fmt=ELF):
    return SymbolTable(path="img", format=fmt, bits=64, little_endian=True, shared=True, symbols=tuple(symbols),
                       needed=tuple(needed), runpath=tuple(runpath), rpath=tuple(rpath))


MISSING_RUST = "_ZN4demo8vanished17h0123456789abcdefE"


def test_every_source_of_definitions_counts():
    host = table(sym("host_export"), sym("host_static_only", table=STATIC), sym("hidden_one", visibility="hidden"))
    libc = table(sym("memcpy", version="GLIBC_2.14"))
    patch = table(
        sym("host_export", defined=False),
        sym("memcpy", defined=False, version="GLIBC_2.14"),
        sym("patch_own"),
        sym("patch_own", defined=False, table=STATIC),
        sym("__gmon_start__", defined=False, binding=WEAK),
        sym("_ITM_registerTMCloneTable", defined=False, binding=WEAK),
    )
    assert check_loadable(patch, host, [libc]).ok


def test_missing_symbols_are_named_demangled_with_the_action():
    host = table(sym("host_static_only", table=STATIC), sym("hidden_one", visibility="hidden"))
    patch = table(sym("host_static_only", defined=False), sym("hidden_one", defined=False),
                  sym(MISSING_RUST, defined=False), sym("memcpy", defined=False, version="GLIBC_2.14"))
    result = check_loadable(patch, host, [])
    assert not result.ok
    assert result.missing == [(MISSING_RUST, "demo::vanished"), ("hidden_one", "hidden_one"),
                              ("host_static_only", "host_static_only"), ("memcpy", "memcpy")]
    assert result.action == RECAPTURE_ACTION and "thinpatch capture" in result.message()
    assert result.to_json()["missing"][0] == {"symbol": MISSING_RUST, "name": "demo::vanished"}


def test_versioned_names_match_by_base_name():
    host = table()
    lib = table(sym("memcpy@@GLIBC_2.14"))
    patch = table(sym("memcpy@GLIBC_2.2.5", defined=False))
    assert check_loadable(patch, host, [lib]).ok


def test_macho_names_drop_the_underscore_for_display():
    patch = table(sym("_missing_c", defined=False, table=STATIC), sym("_" + MISSING_RUST, defined=False, table=STATIC),
                  fmt=MACHO)
    result = check_loadable(patch, table(fmt=MACHO), [])
    assert [name for _, name in result.missing] == ["demo::vanished", "missing_c"]


def test_search_dirs_follow_the_loader_order(tmp_path):
    origin = tmp_path / "bin"
    with_runpath = table(runpath=["$ORIGIN/../lib", "/opt/x"], rpath=["/ignored"])
    dirs = library_search_dirs(with_runpath, origin, env={"LD_LIBRARY_PATH": "/env1:/env2"}, ld_so_conf_dirs=["/conf"])
    assert dirs[:5] == ["/env1", "/env2", f"{origin}/../lib", "/opt/x", "/conf"]
    assert "/ignored" not in dirs and "/lib/x86_64-linux-gnu" in dirs
    with_rpath = table(rpath=["${ORIGIN}/r"])
    assert library_search_dirs(with_rpath, origin, env={"LD_LIBRARY_PATH": "/env"})[:2] == [f"{origin}/r", "/env"]


def test_ld_so_conf_includes(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("# comment\n/opt/a\n")
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/b  # trailing\n")
    (tmp_path / "ld.so.conf").write_text("include conf.d/*.conf\n/opt/top\n")
    assert read_ld_so_conf(tmp_path / "ld.so.conf") == ["/opt/a", "/opt/b", "/opt/top"]
    assert read_ld_so_conf(tmp_path / "missing.conf") == []


def test_find_library(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "libx.so.1").write_bytes(b"")
    assert find_library("libx.so.1", [str(tmp_path / "a"), str(tmp_path / "b")]) == tmp_path / "b" / "libx.so.1"
    assert find_library("libnothere.so", [str(tmp_path)]) is None


class LibraryDirs:
    """Two library directories listed by an ld.so.conf of their own, and a search through a
    cache of its own that counts the libraries it reads."""

    def __init__(self, root):
        self.first, self.second = root / "first", root / "second"
        for d in (self.first, self.second):
            d.mkdir()
        (self.second / "libfoo.so.1").write_bytes(b"")
        self.conf = root / "ld.so.conf"
        self.conf.write_text(f"{self.first}\n{self.second}\n")
        self.host_path = root / "host"
        self.cache = LibraryPathCache()
        self.reads = []

    def read_table(self, path):
        self.reads.append(path)
        return table(needed=["libbar.so.2"] if path.name == "libfoo.so.1" else ())

    def search(self, host):
        return loaded_library_paths(host, self.host_path, self.read_table, env={}, ld_so_conf=self.conf,
                                    cache=self.cache)


def touch_later(path):
    """Move the mtime a second on: the kernel stamps times at a tick's granularity, so two
    changes within one tick could otherwise look like none."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_library_answers_are_reused_while_nothing_they_were_read_from_changes(tmp_path):
    dirs = LibraryDirs(tmp_path)
    host = table(needed=["libfoo.so.1"])
    assert dirs.search(host) == ([dirs.second / "libfoo.so.1"], ["libbar.so.2"])
    assert dirs.search(host) == ([dirs.second / "libfoo.so.1"], ["libbar.so.2"])
    assert dirs.reads == [dirs.second / "libfoo.so.1"]  # the second answer came from the cache
    # another image with other needs gets its own answer
    assert dirs.search(table(needed=["libnothere.so"])) == ([], ["libnothere.so"])


def test_a_changed_ld_so_conf_is_read_again(tmp_path):
    dirs = LibraryDirs(tmp_path)
    host = table(needed=["libfoo.so.1"])
    assert dirs.search(host)[0] == [dirs.second / "libfoo.so.1"]
    third = tmp_path / "third"
    third.mkdir()
    (third / "libfoo.so.1").write_bytes(b"")
    dirs.conf.write_text(f"{third}\n{dirs.second}\n")
    assert dirs.search(host)[0] == [third / "libfoo.so.1"]


def test_a_library_added_to_a_directory_searched_first_is_found(tmp_path):
    dirs = LibraryDirs(tmp_path)
    host = table(needed=["libfoo.so.1"])
    assert dirs.search(host)[0] == [dirs.second / "libfoo.so.1"]
    (dirs.first / "libfoo.so.1").write_bytes(b"")
    touch_later(dirs.first)
    assert dirs.search(host)[0] == [dirs.first / "libfoo.so.1"]


def test_a_rewritten_library_is_read_again(tmp_path):
    dirs = LibraryDirs(tmp_path)
    host = table(needed=["libfoo.so.1"])
    dirs.search(host)
    (dirs.second / "libfoo.so.1").write_bytes(b"new version")
    assert dirs.search(host) == ([dirs.second / "libfoo.so.1"], ["libbar.so.2"])
    assert dirs.reads == [dirs.second / "libfoo.so.1"] * 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF host")
def test_real_host_libraries_are_found_like_the_loader_does():
    images = build_images()
    host = read_symbols(images.host)
    paths, unresolved = loaded_library_paths(host, images.host, read_symbols, env={})
    names = [p.name for p in paths]
    assert unresolved == []
    assert names[: len(host.needed)] == list(host.needed)  # breadth first: the host's own needs first
    assert "libc.so.6" in names


@pytest.fixture(scope="module")
def real_tables():
    images = build_images()
    host = read_symbols(images.host)
    paths, _ = loaded_library_paths(host, images.host, read_symbols, env={})
    return images, host, [read_symbols(p) for p in paths]


def test_real_patch_with_a_new_std_call_loads(real_tables):
    images, host, libs = real_tables
    result = check_loadable(read_symbols(images.patch), host, libs)
    assert result.ok, result.message()


def test_real_patch_with_a_missing_symbol_is_rejected(real_tables):
    images, host, libs = real_tables
    result = check_loadable(read_symbols(images.broken), host, libs)
    assert not result.ok
    assert [name for _, name in result.missing] == ["thinpatch_test_missing_symbol"]


def test_the_rejected_reference_really_fails_dlopen(real_tables):
    """Ground truth for the rejection: the loader itself refuses the broken patch (RTLD_NOW, in
    a separate process), naming the same symbol the check reported."""
    images, _, _ = real_tables
    code = textwrap.dedent(f"""
        import ctypes, os
        try:
            ctypes.CDLL({str(images.broken)!r}, mode=os.RTLD_NOW)
        except OSError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "undefined symbol: thinpatch_test_missing_symbol" in out
