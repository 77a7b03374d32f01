"""The daemon's caches under the capture root (symbol tables, type layouts) are never written
through a link: a cache directory linked elsewhere only costs the time of parsing again."""

from __future__ import annotations

import shutil

from daemon.analysis.layout import program_layouts
from daemon.binary.symbol_cache import SymbolCache
from tests.support.symbol_images import build_images


def test_a_linked_symbol_cache_dir_is_not_written_through(tmp_path):
    image = tmp_path / "host copy"
    shutil.copy2(build_images().host, image)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "symbols").symlink_to(elsewhere)
    cache = SymbolCache()
    table = cache.load(image, tmp_path / "root" / "symbols")
    for writer in cache._writers:  # written behind, on a thread of its own
        writer.join()
    assert table.symbols  # still read, only not kept
    assert list(elsewhere.iterdir()) == []


def test_a_linked_layout_cache_dir_is_not_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "layouts").symlink_to(elsewhere)
    program_layouts([tmp_path / "missing.o"], tmp_path / "root" / "layouts")
    assert list(elsewhere.iterdir()) == []
    program_layouts([tmp_path / "missing.o"], tmp_path / "root" / "plain")
    assert len(list((tmp_path / "root" / "plain").iterdir())) == 1  # a real directory is written
