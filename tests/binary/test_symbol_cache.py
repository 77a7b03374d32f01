"""Parse-once cache: memory hits, disk entries that survive a restart, invalidation on change."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from daemon.binary import symbol_cache
from daemon.binary.symbol_cache import SymbolCache, cache_key, decode_table, disk_entry_path, encode_table
from daemon.binary.symbols import read_symbols
from tests.support.symbol_images import build_images


@pytest.fixture
def image_copy(tmp_path):
    path = tmp_path / "host copy"
    shutil.copy2(build_images().host, path)
    return path


def test_round_trip_of_a_real_table_is_exact():
    table = read_symbols(build_images().clib)  # versions, TLS, weak, local: every field in use
    key = cache_key(build_images().clib)
    assert decode_table(encode_table(table, key), key) == table


def test_memory_then_disk_then_reparse_on_change(image_copy, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache" / "symbols"
    parses = []
    real_read = symbol_cache.read_symbols
    monkeypatch.setattr(symbol_cache, "read_symbols", lambda p: parses.append(p) or real_read(p))

    cold = SymbolCache()
    first = cold.load(image_copy, cache_dir)
    cold.wait_for_writes()  # the entry is written behind the load
    assert len(parses) == 1
    entry = disk_entry_path(cache_dir, cache_key(image_copy))
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700

    warm = SymbolCache()  # a restarted daemon: empty memory, same disk
    assert warm.load(image_copy, cache_dir) == first
    assert warm.load(image_copy, cache_dir) is warm.load(image_copy, cache_dir)  # memory hit
    assert len(parses) == 1

    # The program is rebuilt: different content, new mtime -> parsed again.
    shutil.copy2(build_images().clib, image_copy)
    os.utime(image_copy, ns=(0, first_mtime := cache_key(image_copy).mtime_ns + 1_000_000_000))
    changed = warm.load(image_copy, cache_dir)
    assert len(parses) == 2
    assert changed != first and changed.soname == "libdemo.so.1"
    assert cache_key(image_copy).mtime_ns == first_mtime


def test_damaged_disk_entry_is_ignored(image_copy, tmp_path):
    cache_dir = tmp_path / "cache"
    cold = SymbolCache()
    good = cold.load(image_copy, cache_dir)
    cold.wait_for_writes()
    entry = disk_entry_path(cache_dir, cache_key(image_copy))
    entry.write_bytes(entry.read_bytes()[:200])
    assert SymbolCache().load(image_copy, cache_dir) == good
    entry.write_bytes(b"garbage")
    assert SymbolCache().load(image_copy, cache_dir) == good


def test_entry_for_another_version_is_not_used(image_copy, tmp_path):
    table = read_symbols(image_copy)
    blob = encode_table(table, cache_key(image_copy))
    other = cache_key(image_copy)._replace(size=1)
    with pytest.raises(ValueError):
        decode_table(blob, other)


def test_memory_cache_is_bounded(tmp_path):
    cache = SymbolCache(max_entries=2)
    paths = []
    for i in range(3):
        p = tmp_path / f"lib{i}.so"
        shutil.copy2(build_images().clib, p)
        paths.append(p)
    tables = [cache.load(p) for p in paths]
    assert cache.load(paths[2]) is tables[2]
    assert cache.load(paths[0]) is not tables[0]  # evicted, parsed again
    assert cache.load(paths[0]) == tables[0]


def test_unwritable_cache_dir_still_returns_the_table(image_copy, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert SymbolCache().load(image_copy, blocker / "sub") == read_symbols(image_copy)
