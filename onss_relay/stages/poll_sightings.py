"""poll-sightings.db: the size each remote answer file without GO had at the last poll that listed it (such a file
is taken once its size held across two polls), kept across runs (a cron'd `poll --once`) and across processes.

Only a hint: at worst a file without GO waits one more poll. So it is written without fsync, and a file SQLite
cannot read (a crash of the machine mid-write) is replaced by an empty one. It holds only files still listed and
not taken (poll_listing.py rewrites a folder's rows from its listing), read by a join, never loaded whole: the
poll's memory does not grow with the files waiting for their GO. It replaces poll-sightings.json, which held
them all in memory and kept sightings of files already taken."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import structlog

from onss_relay.scratch import as_os_error, remove_scratch

log = structlog.get_logger(__name__)

NAME = "poll-sightings.db"
OLD = "poll-sightings.json"  # what versions before it kept (dropped: the next polls see the sizes again)
WHAT = "the poll's sightings"
SCHEMA = """CREATE TABLE IF NOT EXISTS last.sightings (folder TEXT NOT NULL, name TEXT NOT NULL,
  size INTEGER NOT NULL, PRIMARY KEY (folder, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last.reported (run TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL,
  PRIMARY KEY (run, folder, name)) WITHOUT ROWID"""
# the files a poller (its run) said once were suspicious or too large: said once per process, not at every poll


def sightings_path(root: Path) -> Path:
    """Given the spool root, return the sightings file (the older JSON one beside it is removed)."""
    with contextlib.suppress(OSError):
        (root / OLD).unlink()
    return root / NAME


def attach_sightings(db: sqlite3.Connection, path: Path, run: str) -> None:
    """Given a connection, the sightings file and the poller's run, attach the file as ``last`` (created when
    missing; one SQLite cannot read is replaced by an empty one, and said) and drop what other runs reported."""
    for attempt in (0, 1):
        try:
            with as_os_error(path, WHAT):
                db.execute("ATTACH DATABASE ? AS last", (str(path),))
                db.execute("PRAGMA last.synchronous=OFF")
                db.executescript(SCHEMA)
                db.execute("DELETE FROM last.reported WHERE run <> ?", (run,))
                db.commit()
            return
        except OSError as e:
            code = getattr(e.__cause__, "sqlite_errorcode", 0) & 0xFF
            if attempt or code not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise
            with contextlib.suppress(sqlite3.Error):
                db.execute("DETACH DATABASE last")
            log.warning("poll_sightings_replaced", file=str(path), detail=f"{e}: started again empty (a hint only)")
            remove_scratch(path)
            remove_scratch(path.with_name(path.name + "-journal"))
