"""Parse each binary once: an in-memory LRU plus an on-disk cache that survives restarts.

Entries are keyed by the resolved path, the size and ``mtime_ns``; a file that changed
is parsed again. On disk each entry is one file (mode 0600, directory 0700), written
atomically, so a crash or a concurrent reader never sees half a file. It holds the program
index (what verify needs, see ``program_index``) as plain arrays, and the symbols as
compressed columns that are only decoded when something asks for the symbols themselves.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import threading
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, overload

from capture.platforms import ObjectFormat
from capture.private_fs import write_atomic
from daemon.binary.program_index import attach_index, decode_index, encode_index, program_index
from daemon.binary.symbols import (
    DATA,
    DEFAULT,
    DYNAMIC,
    FUNCTION,
    GLOBAL,
    HIDDEN,
    INTERNAL,
    LOCAL,
    OTHER,
    PROTECTED,
    STATIC,
    TLS,
    WEAK,
    Symbol,
    SymbolTable,
    gc_paused,
    normalise_name,
    read_symbols,
)

CACHE_FORMAT_VERSION = 3
MEMORY_ENTRIES = 16


class CacheKey(NamedTuple):
    path: str
    size: int
    mtime_ns: int


def cache_key(path: str | Path) -> CacheKey:
    resolved = Path(path).resolve()
    st = resolved.stat()
    return CacheKey(str(resolved), st.st_size, st.st_mtime_ns)


class SymbolCache:
    """Symbol tables by file identity, kept in memory and (optionally) in ``cache_dir``."""

    def __init__(self, max_entries: int = MEMORY_ENTRIES) -> None:
        self._entries: OrderedDict[CacheKey, SymbolTable] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._writers: list[threading.Thread] = []

    def wait_for_writes(self) -> None:
        """Until every disk entry this cache started writing is written."""
        with self._lock:
            writers, self._writers = self._writers, []
        for writer in writers:
            writer.join()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def load(self, path: str | Path, cache_dir: str | Path | None = None) -> SymbolTable:
        key = cache_key(path)
        with self._lock:
            table = self._entries.get(key)
            if table is not None:
                self._entries.move_to_end(key)
                return table
        table = _read_disk_entry(Path(cache_dir), key) if cache_dir is not None else None
        if table is None:
            table = read_symbols(key.path)
            # A file rewritten while we parsed it must not be stored under the old key.
            if cache_key(key.path) != key:
                return table
            program_index(table)  # once per file version; stored with the table
            if cache_dir is not None:
                # Written behind: the caller (a patch waiting for its host) need not wait for
                # the encoding. Not a daemon thread, so a one-shot command still finishes it.
                writer = threading.Thread(
                    target=_write_disk_entry, args=(Path(cache_dir), key, table), name="symbol-cache-write"
                )
                writer.start()
                with self._lock:
                    self._writers = [w for w in self._writers if w.is_alive()] + [writer]
        with self._lock:
            self._entries[key] = table
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return table


_default_cache = SymbolCache()


def load_symbols(path: str | Path, cache_dir: str | Path | None = None) -> SymbolTable:
    """The symbol table of ``path``, parsed at most once per file version."""
    return _default_cache.load(path, cache_dir)


def clear_memory_cache() -> None:
    _default_cache.clear()


def wait_for_writes() -> None:
    """Until the disk entries started by ``load_symbols`` are written."""
    _default_cache.wait_for_writes()


def disk_entry_path(cache_dir: Path, key: CacheKey) -> Path:
    digest = hashlib.sha256(key.path.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir / f"symbols-{digest}.bin"


# Disk format: MAGIC, a u32 header length, a JSON header, the program index
# (``program_index.encode_index``), then the columns: names ("\0"-joined UTF-8),
# addresses (u64), sizes (u64), section indices (u32), one packed flags byte per symbol, and
# version-name indices (u16, 0 = none). Columns load with a few bulk calls, much faster than
# JSON rows and free of pickle; they are decoded on first use only.
MAGIC = b"THINPATCH-SYMBOLS\n"
_KINDS = (FUNCTION, DATA, TLS, OTHER)
_BINDINGS = (LOCAL, GLOBAL, WEAK)
_VISIBILITIES = (DEFAULT, INTERNAL, HIDDEN, PROTECTED)
_TABLES = (STATIC, DYNAMIC)


def encode_table(table: SymbolTable, key: CacheKey) -> bytes:
    symbols = table.symbols
    versions: dict[str, int] = {}
    version_indices = array("H")
    for s in symbols:
        version_indices.append(0 if s.version is None else versions.setdefault(s.version, len(versions) + 1))
    kinds = {k: i for i, k in enumerate(_KINDS)}
    bindings = {b: i for i, b in enumerate(_BINDINGS)}
    visibilities = {v: i for i, v in enumerate(_VISIBILITIES)}
    tables = {t: i for i, t in enumerate(_TABLES)}
    flags = bytes(
        kinds[s.kind]
        | bindings[s.binding] << 2
        | visibilities[s.visibility] << 4
        | s.defined << 6
        | tables[s.table] << 7
        for s in symbols
    )
    columns = [
        "\0".join(s.name for s in symbols).encode("utf-8", "surrogateescape"),
        array("Q", (s.address for s in symbols)).tobytes(),
        array("Q", (s.size for s in symbols)).tobytes(),
        array("I", (s.section_index for s in symbols)).tobytes(),
        flags,
        version_indices.tobytes(),
    ]
    # Not compressed: zlib took most of the encoding time of a large program, and disk is cheap.
    index = encode_index(program_index(table))
    header = {
        "version": CACHE_FORMAT_VERSION,
        "byteorder": sys.byteorder,
        "key": list(key),
        "path": table.path,
        "format": table.format,
        "bits": table.bits,
        "little_endian": table.little_endian,
        "shared": table.shared,
        "needed": list(table.needed),
        "soname": table.soname,
        "runpath": list(table.runpath),
        "rpath": list(table.rpath),
        "count": len(symbols),
        "versions": sorted(versions, key=versions.__getitem__),
        "index": len(index),
        "columns": [len(c) for c in columns],
        "columns_crc32": zlib.crc32(b"".join(columns)),
    }
    head = json.dumps(header, ensure_ascii=False).encode("utf-8", "surrogateescape")
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, index, *columns])


class LazySymbols(Sequence[Symbol]):
    """A table's symbols, decoded from the cache entry's columns the first time they are read.

    Verify needs only the program index; the symbols themselves (127k of them take a few
    hundred milliseconds to build) are decoded when something iterates them.
    """

    def __init__(self, count: int, decode: Callable[[], tuple[Symbol, ...]]) -> None:
        self._count = count
        self._decode: Callable[[], tuple[Symbol, ...]] | None = decode
        self._symbols: tuple[Symbol, ...] | None = None
        self._lock = threading.Lock()

    @property
    def decoded(self) -> bool:
        return self._symbols is not None

    def _all(self) -> tuple[Symbol, ...]:
        symbols = self._symbols
        if symbols is None:
            with self._lock:
                if self._symbols is None:
                    assert self._decode is not None
                    self._symbols = self._decode()
                    self._decode = None
                symbols = self._symbols
        return symbols

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> Symbol: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Symbol, ...]: ...
    def __getitem__(self, i: int | slice) -> Symbol | tuple[Symbol, ...]:
        return self._all()[i]

    def __iter__(self) -> Iterator[Symbol]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, LazySymbols)):
            return self._all() == tuple(other)
        return NotImplemented

    # Unhashable, as Python makes a class that defines __eq__ alone; said here so type checkers
    # know. typeshed types object.__hash__ as a method, so None needs the ignore (as list's does).
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazySymbols({self._count} symbols{'' if self.decoded else ', not decoded'})"


def decode_table(blob: bytes, key: CacheKey | None = None) -> SymbolTable:
    """The table stored by ``encode_table``; ValueError if it is damaged or for another key."""
    if not blob.startswith(MAGIC):
        raise ValueError("not a symbol cache entry")
    offset = len(MAGIC)
    (head_len,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    header = json.loads(blob[offset : offset + head_len].decode("utf-8", "surrogateescape"))
    offset += head_len
    if header["version"] != CACHE_FORMAT_VERSION or header["byteorder"] != sys.byteorder:
        raise ValueError("cache entry from another format")
    if key is not None and CacheKey(*header["key"]) != key:
        raise ValueError("cache entry for another file version")
    index_len = header["index"]
    index = decode_index(memoryview(blob)[offset : offset + index_len])
    offset += index_len
    packed = memoryview(blob)[offset:]
    if len(packed) != sum(header["columns"]):
        raise ValueError("cache entry has the wrong length")
    count = header["count"]
    version_names = [None, *header["versions"]]
    entry_key = CacheKey(*header["key"])

    def decode_symbols() -> tuple[Symbol, ...]:
        # Checked here rather than at load: the check reads every column, which verify never
        # needs. A damaged entry falls back to parsing the file, if it is still that version.
        if zlib.crc32(packed) == header["columns_crc32"]:
            columns, start = [], 0
            for length in header["columns"]:
                columns.append(bytes(packed[start : start + length]))
                start += length
            try:
                return _symbols_from_columns(columns, count, version_names)
            except ValueError:
                pass
        if cache_key(entry_key.path) != entry_key:
            raise ValueError(f"the symbol cache entry of {entry_key.path} is damaged and the file changed")
        return tuple(read_symbols(entry_key.path).symbols)  # a tuple already: returned as it is

    table = SymbolTable(
        path=header["path"],
        format=ObjectFormat(header["format"]),
        bits=header["bits"],
        little_endian=header["little_endian"],
        shared=header["shared"],
        symbols=LazySymbols(count, decode_symbols),
        needed=tuple(header["needed"]),
        soname=header["soname"],
        runpath=tuple(header["runpath"]),
        rpath=tuple(header["rpath"]),
    )
    attach_index(table, index)
    return table


def _symbols_from_columns(columns: list[bytes], count: int, version_names: list[str | None]) -> tuple[Symbol, ...]:
    names_blob, address_blob, size_blob, section_blob, flags, version_blob = columns
    names = names_blob.decode("utf-8", "surrogateescape").split("\0") if count else []
    addresses, sizes, sections, version_indices = array("Q"), array("Q"), array("I"), array("H")
    addresses.frombytes(address_blob)
    sizes.frombytes(size_blob)
    sections.frombytes(section_blob)
    version_indices.frombytes(version_blob)
    if not (len(names) == len(addresses) == len(sizes) == len(sections) == len(flags) == len(version_indices) == count):
        raise ValueError("cache entry columns disagree")
    new = tuple.__new__
    with gc_paused():
        return tuple(
            [
                new(
                    Symbol,
                    (
                        name,
                        normalise_name(name) if ".llvm." in name else name,
                        address,
                        size,
                        _KINDS[flag & 3],
                        _BINDINGS[flag >> 2 & 3],
                        _VISIBILITIES[flag >> 4 & 3],
                        bool(flag & 64),
                        section,
                        _TABLES[flag >> 7],
                        version_names[version],
                    ),
                )
                for name, address, size, section, flag, version in zip(
                    names, addresses, sizes, sections, flags, version_indices
                )
            ]
        )


def _read_disk_entry(cache_dir: Path, key: CacheKey) -> SymbolTable | None:
    try:
        blob = disk_entry_path(cache_dir, key).read_bytes()
        return decode_table(blob, key)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return None  # missing, stale or damaged: parse again


def _write_disk_entry(cache_dir: Path, key: CacheKey, table: SymbolTable) -> None:
    try:
        blob = encode_table(table, key)
        # the cache dir is walked from its parent: never written through a link
        write_atomic(disk_entry_path(cache_dir, key), blob, within=cache_dir.parent)
    except (OSError, ValueError, KeyError, struct.error):
        pass  # a cache that cannot be written only costs time (and this runs on its own thread)
