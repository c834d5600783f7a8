"""One OUT folder's listing, spilled to a scratch SQLite file in the spool as the server sends it, read back one
response set at a time: the poller holds a batch, never the folder (100,000 answers list in a few MB). The spool
is the one place the relay may write (a read-only root or a private /tmp in a container or a hardened unit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from onss_relay.scratch import as_os_error, open_scratch, remove_scratch
from onss_relay.transport.base import RemoteEntry

INSERT_EVERY = 1000  # entries buffered before one insert
CACHE_KIB = 2048  # SQLite page cache: what the listing may hold in memory
WHAT = "the poll's scratch listing"


class SpilledListing:
    """Given a scratch file path, keep entries added one by one (with the key of the set each belongs to) there
    and give them back grouped by set, in key order, each set's entries in name order. Close it (or use it as a
    context manager) to remove the file; one left by a crash is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_scratch(
            path,
            "CREATE TABLE entries (set_key TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL)",
            WHAT,
            CACHE_KIB,
        )
        self._pending: list[tuple[str, str, int]] = []

    def __enter__(self) -> SpilledListing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, key: str, entry: RemoteEntry) -> None:
        """Given a set key and one of its remote files, keep it (written in groups of INSERT_EVERY)."""
        self._pending.append((key, entry.name, entry.size))
        if len(self._pending) >= INSERT_EVERY:
            self._flush()

    def _flush(self) -> None:
        with as_os_error(self.path, WHAT):
            self._db.executemany("INSERT INTO entries VALUES (?, ?, ?)", self._pending)
        self._pending.clear()

    def sets(self) -> Iterator[tuple[str, list[RemoteEntry]]]:
        """Yield (set key, its entries) for every set added, in key order."""
        self._flush()
        with as_os_error(self.path, WHAT):
            self._db.execute("CREATE INDEX entries_set ON entries(set_key, name)")
        key: str | None = None
        members: list[RemoteEntry] = []
        for k, name, size in self._db.execute("SELECT set_key, name, size FROM entries ORDER BY set_key, name"):
            if k != key and members:
                yield key or "", members
                members = []
            key = k
            members.append(RemoteEntry(name, size, "file"))
        if members:
            yield key or "", members

    def close(self) -> None:
        self._db.close()
        remove_scratch(self.path)
