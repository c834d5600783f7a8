"""One pass over the outbox, streamed: files that are no declaration quarantined with a reason, and every other
file's name, set, size and mtime indexed. Past SPILL_AT files the index goes to a scratch SQLite file in the spool
and is read back a page of sets at a time, so that a scan holds a page, never the outbox: 100,000 waiting files
cost the claim a few MB, not ~50 (names, sizes and settle states are kept in memory only for small outboxes).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

from onss_relay.errors import InvalidName
from onss_relay.names import Prefix, parse_name, set_key
from onss_relay.scratch import as_os_error, open_scratch, remove_scratch
from onss_relay.spool import Spool, is_temp_name
from onss_relay.stages.settle import SettleTracker

SPILL_AT = 1000  # files indexed in memory; past this the index is written to its scratch file, as many at a time
CACHE_KIB = 1024  # the scratch file's SQLite page cache
SCRATCH = "outbox-index.db"  # in the spool's root, removed after each scan (one left by a crash is replaced)
WHAT = "the claim's scratch index of the outbox"
# names are kept as the filesystem's bytes: a name that is no UTF-8 (a surrogate in Python) is a file like another
SCHEMA = "CREATE TABLE files (set_key TEXT, name BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL)"

Row = tuple[str | None, str, int, int]  # set key (None: no declaration file), name, size, mtime in ns


@dataclasses.dataclass(frozen=True)
class Seen:
    """One outbox file as the scan saw it: its name, size and mtime (what the settle tracker compares)."""

    name: str
    st_size: int
    st_mtime_ns: int


class OutboxIndex:
    """The outbox as one scan saw it: each set's files (by GO name) and every name present. Held in memory up to
    SPILL_AT files, in a scratch SQLite file past that; use it as a context manager (the file is removed)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._rows: list[Row] = []  # not written yet (all of them while the outbox is small)
        self._db: sqlite3.Connection | None = None
        self._names: set[str | None] = set()  # in memory only: what __contains__ and has_set look up
        self._keys: set[str | None] = set()

    def __enter__(self) -> OutboxIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, key: str | None, name: str, size: int, mtime_ns: int) -> None:
        """Given a file's set (None: no declaration file), name, size and mtime, index it."""
        self._rows.append((key, name, size, mtime_ns))
        if len(self._rows) >= SPILL_AT:
            self._spill()

    def _spill(self) -> None:
        """Write the rows held so far to the scratch file (created at the first spill)."""
        if self._db is None:
            self._db = open_scratch(self.scratch, SCHEMA, WHAT, CACHE_KIB)
        with as_os_error(self.scratch, WHAT):
            self._db.executemany(
                "INSERT INTO files VALUES (?, ?, ?, ?)", [(k, os.fsencode(n), s, m) for k, n, s, m in self._rows]
            )
        self._rows = []

    def finish(self) -> None:
        """Once every file is added: write what is left and index the scratch file by set and by name."""
        if self._db is None:
            self._names, self._keys = {r[1] for r in self._rows}, {r[0] for r in self._rows}
            return
        self._spill()
        with as_os_error(self.scratch, WHAT):
            self._db.execute("CREATE INDEX files_set ON files(set_key, name)")
            self._db.execute("CREATE INDEX files_name ON files(name)")

    def pages(self, size: int, first: int | None = None) -> Iterator[list[str]]:
        """Given a page size (and the first page's, when smaller), yield the sets' GO names in sorted order, a page
        at a time (read a page at a time)."""
        sizes = itertools.chain([first or size], itertools.repeat(size))
        if self._db is None:
            keys = sorted({key for key, *_ in self._rows if key is not None})
            start = 0
            while start < len(keys):
                n = next(sizes)
                yield keys[start : start + n]
                start += n
            return
        last = ""
        while True:
            with as_os_error(self.scratch, WHAT):
                query = "SELECT DISTINCT set_key FROM files WHERE set_key > ? ORDER BY set_key LIMIT ?"
                keys = [key for (key,) in self._db.execute(query, (last, next(sizes)))]
            if not keys:
                return
            yield keys
            last = keys[-1]

    def files_of(self, keys: list[str]) -> dict[str, list[Seen]]:
        """Given sets' GO names, return each one's files as the scan saw them, in name order."""
        if self._db is None:
            wanted = set(keys)
            rows = sorted((r for r in self._rows if r[0] in wanted), key=lambda r: (r[0] or "", r[1]))
        else:
            marks = ",".join("?" * len(keys))
            query = f"SELECT * FROM files WHERE set_key IN ({marks}) ORDER BY set_key, name"  # noqa: S608
            with as_os_error(self.scratch, WHAT):
                rows = [(k, os.fsdecode(n), s, m) for k, n, s, m in self._db.execute(query, keys)]
        return {
            str(key): [Seen(name, size, mtime) for _, name, size, mtime in group]
            for key, group in itertools.groupby(rows, key=lambda r: r[0])
        }

    def has_set(self, key: str) -> bool:
        """Given a GO name, whether the scan saw a file of that set."""
        return self._has("set_key", key)

    def __contains__(self, name: object) -> bool:
        """Whether the scan saw a file of that name (declaration or not)."""
        return isinstance(name, str) and self._has("name", name)

    def _has(self, column: str, value: str) -> bool:
        if self._db is None:
            return value in (self._keys if column == "set_key" else self._names)
        with as_os_error(self.scratch, WHAT):
            query = f"SELECT 1 FROM files WHERE {column} = ? LIMIT 1"  # noqa: S608
            held = os.fsencode(value) if column == "name" else value
            return self._db.execute(query, (held,)).fetchone() is not None

    def close(self) -> None:
        """Drop the index and remove its scratch file."""
        self._rows, self._names, self._keys = [], set(), set()
        if self._db is not None:
            self._db.close()
            self._db = None
            remove_scratch(self.scratch)


def index_outbox(spool: Spool, tracker: SettleTracker) -> OutboxIndex:
    """Given the spool and the settle tracker, read the outbox once (streamed) and return its index: each file's
    set, name, size and mtime. What is no declaration is fed to the tracker and quarantined once settled (a
    declaration file is fed to it when its set's page is claimed, and only if the set is not claimed yet);
    temporary names are left alone."""
    index = OutboxIndex(spool.paths.root / SCRATCH)
    try:
        it = os.scandir(spool.outbox)
    except FileNotFoundError:
        return index
    try:
        with it:
            for entry in it:
                if is_temp_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    _add(index, spool, tracker, entry.name, st)
                elif not stat.S_ISDIR(st.st_mode):
                    refuse_odd(spool, Path(entry.path), st)
        index.finish()
    except BaseException:
        index.close()
        raise
    return index


def _add(index: OutboxIndex, spool: Spool, tracker: SettleTracker, name: str, st: os.stat_result) -> None:
    """Given the index, a regular file's name and stat, index it under its set, or quarantine it (once settled)
    when its name is no declaration file a sender sends."""
    try:
        parsed = parse_name(name)
    except InvalidName as e:
        index.add(None, name, st.st_size, st.st_mtime_ns)
        if tracker.settled(name, st):
            spool.quarantine([spool.outbox / name], "not a valid declaration file name", str(e))
        return
    if parsed.prefix not in (Prefix.FI, Prefix.FS, Prefix.GO):
        index.add(None, name, st.st_size, st.st_mtime_ns)
        if tracker.settled(name, st):
            detail = f"{name}: prefix {parsed.prefix} is not sent by senders"
            spool.quarantine([spool.outbox / name], "not a declaration file", detail)
        return
    index.add(set_key(parsed), name, st.st_size, st.st_mtime_ns)


def refuse_odd(spool: Spool, path: Path, st: os.stat_result) -> None:
    """Given an outbox entry that is not a regular file, quarantine it with why (never silently skipped).

    A symbolic link is not followed: it may point at any file the relay can read (its key, another
    payroll's data) and its target may change after it is signed; the link itself goes to failed/."""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        reason = "a symbolic link, not a file"
        detail = (
            f"{path.name} is a symbolic link to {target}: the relay sends only regular files put in the "
            "outbox (a link may point at any file the relay can read, and its target can change); "
            "copy or move the file itself into the outbox"
        )
    else:
        reason = "not a regular file"
        detail = f"{path.name} is a pipe, socket or device, not a declaration file"
    spool.quarantine([path], reason, detail)
