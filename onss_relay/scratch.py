"""Scratch SQLite files in the spool: large lists (a poll's remote listing, an outbox scan's index) spilled to disk
and read back a page at a time, so that what the relay holds in memory does not grow with them. The spool is the
one place the relay may write (a read-only root or a private /tmp in a container or a hardened unit)."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

CACHE_KIB = 2048  # SQLite page cache: what a scratch file may hold in memory


def open_scratch(path: Path, schema: str, what: str, cache_kib: int = CACHE_KIB) -> sqlite3.Connection:
    """Given a path in the spool, the table's CREATE statement and what it holds (said in errors), replace any file a crash left there with an
    empty scratch database (no journal, no fsync, a bounded page cache) and return its connection."""
    remove_scratch(path)
    with as_os_error(path, what):
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA journal_mode=OFF")  # scratch: nothing to recover after a crash
            db.execute("PRAGMA synchronous=OFF")
            db.execute(f"PRAGMA cache_size=-{cache_kib}")
            db.execute(schema)
        except sqlite3.Error:
            db.close()
            remove_scratch(path)
            raise
    return db


@contextlib.contextmanager
def as_os_error(path: Path, what: str) -> Iterator[None]:
    """Given a scratch file and what it holds, turn SQLite's errors on it into the OSError they are (a full disk:
    ENOSPC, told by SQLite's result code, never by its message), so that a stage stopped by them is a local
    problem said in one sentence and tried again, like any other write to the spool."""
    try:
        yield
    except sqlite3.Error as e:
        full = getattr(e, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, f"{e} ({what})", str(path)) from e


def remove_scratch(path: Path) -> None:
    """Given a scratch file's path, remove it if it is there."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
