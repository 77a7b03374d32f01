"""One program connection's hot entry points: deduplicated, in the order they were first
reported, and bounded, so that no client can make the daemon hold more than a few MiB.

The server keeps one :class:`ReportedEntryPoints` per connection and drops it when the
connection ends; ``DaemonServer.entry_points(build_id)`` gives the union over a binary's
live connections.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from daemon.socket.protocol import MAX_ENTRY_POINTS, EntryPoint, RequestError

# At most this many bytes of names (`name` + `returns`) per connection.
MAX_ENTRY_POINT_BYTES = 4 * 1024 * 1024


def _size(entry: EntryPoint) -> int:
    return len(entry.name.encode("utf-8")) + len(entry.returns.encode("utf-8"))


class ReportedEntryPoints:
    """The entry points one connection reported."""

    def __init__(self, *, max_entries: int = MAX_ENTRY_POINTS, max_bytes: int = MAX_ENTRY_POINT_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[EntryPoint, None] = {}  # insertion-ordered set
        self._bytes = 0

    def add(self, entries: Iterable[EntryPoint]) -> list[EntryPoint]:
        """Add ``entries``; return those not reported before, in order.

        All or nothing: when they would pass a limit, none is kept and :class:`RequestError`
        says why.
        """
        new: dict[EntryPoint, None] = {}
        size = 0
        for entry in entries:
            if entry not in self._entries and entry not in new:
                new[entry] = None
                size += _size(entry)
        if len(self._entries) + len(new) > self.max_entries:
            raise RequestError(
                f"too many entry points: this connection may report {self.max_entries}, "
                f"and these would make {len(self._entries) + len(new)}; none of them was kept"
            )
        if self._bytes + size > self.max_bytes:
            raise RequestError(
                f"the entry points' names would take more than {self.max_bytes} bytes on this "
                "connection; none of them was kept"
            )
        self._entries.update(new)
        self._bytes += size
        return list(new)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __iter__(self) -> Iterator[EntryPoint]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
