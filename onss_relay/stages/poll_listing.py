"""One OUT folder's listing, spilled to a scratch SQLite file in the spool as the server sends it, read back one
response set at a time: the poller holds a batch, never the folder (100,000 answers list in a few MB). The spool
is the one place the relay may write (a read-only root or a private /tmp in a container or a hardened unit).

The sizes of answer files without GO seen at the last poll (a file without GO is taken once its size held across
two polls) are kept beside it in ``poll-sightings.db`` (poll_sightings.py), joined to the listing as it is read
back and rewritten from it at the end of the folder: only files still listed and not taken are kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from onss_relay.scratch import as_os_error, open_scratch, remove_scratch
from onss_relay.stages.poll_sightings import attach_sightings
from onss_relay.transport.base import RemoteEntry

INSERT_EVERY = 1000  # entries buffered before one insert
CACHE_KIB = 2048  # SQLite page cache: what the listing may hold in memory
WHAT = "the poll's scratch listing"
ENTRIES = "CREATE TABLE entries (set_key TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL)"
MARKS = """
CREATE TABLE reached (set_key TEXT PRIMARY KEY, goless INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE taken (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE noted (name TEXT PRIMARY KEY) WITHOUT ROWID;
"""
# the sightings of one folder once its poll ended: those of sets reached without GO and not taken; after a stop,
# those of sets not reached yet stay as the last poll saw them (when still listed)
FORGET = """DELETE FROM last.sightings WHERE folder = :folder AND (NOT :stopped
  OR name NOT IN (SELECT name FROM entries) OR name IN (SELECT name FROM entries JOIN reached USING (set_key)))"""
KEEP = """INSERT OR REPLACE INTO last.sightings SELECT :folder, name, size FROM entries JOIN reached USING (set_key)
  WHERE goless AND name NOT IN (SELECT name FROM taken)"""
UNNOTE = "DELETE FROM last.reported WHERE run = :run AND folder = :folder AND name NOT IN (SELECT name FROM noted)"


class SpilledListing:
    """Given a scratch file path (and the sightings file, with the folder listed), keep entries added one by one
    (with the key of the set each belongs to) there and give them back grouped by set, in key order, each set's
    entries in name order with the size each had at the last poll. Close it (or use it as a context manager) to
    remove the file; one left by a crash is replaced."""

    def __init__(self, path: Path, sightings: Path | None = None, folder: str = "", run: str = "") -> None:
        self.path = path
        self.folder = folder
        self._db = open_scratch(path, ENTRIES, WHAT, CACHE_KIB)
        self._sightings, self._run = sightings, run
        try:
            with as_os_error(path, WHAT):
                self._db.executescript(MARKS)
            if sightings is not None:
                attach_sightings(self._db, sightings, run)
        except BaseException:
            self.close()  # a full disk: no scratch file left behind
            raise
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

    def sets(self) -> Iterator[tuple[str, list[RemoteEntry], dict[str, int]]]:
        """Yield (set key, its entries, the size each had at the last poll when it was seen) for every set
        added, in key order."""
        self._flush()
        with as_os_error(self.path, WHAT):
            self._db.execute("CREATE INDEX entries_set ON entries(set_key, name)")
        query = "SELECT set_key, name, size, NULL FROM entries ORDER BY set_key, name"
        if self._sightings is not None:
            query = (
                "SELECT e.set_key, e.name, e.size, l.size FROM entries e LEFT JOIN last.sightings l"
                " ON l.folder = ? AND l.name = e.name ORDER BY e.set_key, e.name"
            )
        key: str | None = None
        members: list[RemoteEntry] = []
        last: dict[str, int] = {}
        params = (self.folder,) if self._sightings is not None else ()
        for k, name, size, before in self._db.execute(query, params):
            if k != key and members:
                yield key or "", members, last
                members, last = [], {}
            key = k
            members.append(RemoteEntry(name, size, "file"))
            if before is not None:
                last[name] = before
        if members:
            yield key or "", members, last

    def reached(self, key: str, goless: bool) -> None:
        """Given a set read back and whether it has no GO, note it reached: its sightings are this listing's."""
        with as_os_error(self.path, WHAT):
            self._db.execute("INSERT OR REPLACE INTO reached VALUES (?, ?)", (key, int(goless)))

    def taken(self, names: list[str]) -> None:
        """Given files copied and deleted remotely, note them taken: no sighting is kept of them."""
        with as_os_error(self.path, WHAT):
            self._db.executemany("INSERT OR IGNORE INTO taken VALUES (?)", [(n,) for n in names])

    def first_note(self, name: str) -> bool:
        """Given a listed file found suspicious or too large, return whether it is the first time this run (the
        poller's process) notes it: said once, not at every poll (without a sightings file: every time)."""
        if self._sightings is None:
            return True
        with as_os_error(self._sightings, "the poll's sightings"):
            self._db.execute("INSERT OR IGNORE INTO noted VALUES (?)", (name,))
            new = self._db.execute(
                "INSERT OR IGNORE INTO last.reported VALUES (?, ?, ?)", (self._run, self.folder, name)
            )
            return new.rowcount == 1

    def save_sightings(self, stopped: bool) -> None:
        """Rewrite the folder's sightings from this listing (see FORGET and KEEP), in one transaction."""
        if self._sightings is None:
            return
        with as_os_error(self._sightings, "the poll's sightings"), self._db:
            self._db.execute(FORGET, {"folder": self.folder, "stopped": int(stopped)})
            self._db.execute(KEEP, {"folder": self.folder})
            if not stopped:  # files no longer noted are said again if they come back
                self._db.execute(UNNOTE, {"folder": self.folder, "run": self._run})

    def close(self) -> None:
        self._db.close()
        remove_scratch(self.path)
