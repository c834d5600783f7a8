"""`onss-relay backup DEST` and `onss-relay restore SRC`: the journal copied with SQLite's online backup API (a
consistent copy while the daemon writes, no sqlite3 program needed), and put back only while no relay runs,
owned like the spool it goes into."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TextIO

from onss_relay.commands.check_access import service_user
from onss_relay.config import Config
from onss_relay.errors import LocalError, UsageError, describe_os_error
from onss_relay.journal import open_journal_at
from onss_relay.restored_sent import record_sent_found_in_sent
from onss_relay.spool import Spool, SpoolLock


def backup(cfg: Config, dest: Path, out: TextIO) -> int:
    """Given the configuration and a destination file (or folder: journal.db in it), write a consistent copy of
    the journal there under a temporary name, then rename it; print where; return 0."""
    _refuse_postgres(cfg, "backup")
    source = cfg.paths.journal_path
    if not source.exists():
        raise UsageError(f"no journal at {source} (paths.root): nothing to back up")
    if dest.is_dir():
        dest = dest / "journal.db"
    _refuse_inside_spool(cfg, dest)
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent}: no such folder for the backup")
    sets = _copy(source, dest)
    print(f"backed up {source} to {dest} ({sets} set(s))", file=out)
    return 0


def _refuse_postgres(cfg: Config, what: str) -> None:
    """Given the configuration, refuse backup and restore of a PostgreSQL journal: the database's own tools
    (pg_dump, pg_restore, its replication) copy it consistently; this command knows SQLite files only."""
    if cfg.journal.url:
        raise UsageError(
            f"{what}: journal.url names a PostgreSQL journal; use pg_dump / pg_restore on that database instead"
        )


def _refuse_inside_spool(cfg: Config, dest: Path) -> None:
    """Given a backup destination, refuse the journal itself and anything inside the spool: a backup there
    replaced the live journal (and its -wal) under a running daemon, and a spool is no place for a backup."""
    root = cfg.paths.root.resolve()
    where = dest.resolve()
    if where == root or root in where.parents:
        raise UsageError(
            f"{dest}: inside the spool ({cfg.paths.root}); a backup goes outside it (never onto the live journal)"
        )


def restore(cfg: Config, src: Path, out: TextIO) -> int:
    """Given the configuration and a journal copy, put it in place of the spool's journal while holding the spool
    lock (refused while a relay runs), owned and moded like the spool root for the service user; return 0."""
    _refuse_postgres(cfg, "restore")
    target = cfg.paths.journal_path
    owner = _spool_owner(cfg.paths.root)
    lock = SpoolLock(cfg.paths.root)
    lock.acquire_or_refuse("restore", "stop it first (systemctl stop onss-relay), then restore")
    try:
        had = target.exists()
        spool = Spool(cfg.paths)
        folders = (spool.outbox, spool.sent, spool.failed, spool.results, spool.work, spool.inbox)
        missing = [d for d in folders if not d.exists()]
        spool.create()  # the daemon would make them; made here as root, they would be root's
        _give(owner, cfg.paths.root, lock.path, *missing, *(p for d in missing for p in d.rglob("*")))
        sets = _copy(src, target, owner_of=cfg.paths.root)
        journal = open_journal_at(target)
        try:
            found = record_sent_found_in_sent(journal, spool)
        except OSError as e:  # sent/ unreadable: the journal is in place, its pending sets not matched with sent/
            raise LocalError(
                f"restored {target} from {src} ({sets} set(s)), but sent/ could not be read to find the sets sent "
                f"after the backup ({describe_os_error(e)}): make it readable and run restore again, before any send"
            ) from e
        finally:
            journal.close()
            _give(owner, *(p for p in target.parent.glob(target.name + "-*") if p.exists()))  # -wal, -shm if kept
    finally:
        lock.release()
    before = "the previous journal was replaced" if had else f"there was no journal in {cfg.paths.root} before"
    print(f"restored {target} from {src} ({sets} set(s)); {before}", file=out)
    if found:
        print(
            f"{len(found)} set(s) the backup saw pending are in sent/ (sent after it was taken): recorded sent",
            file=out,
        )
    return 0


def _spool_owner(root: Path) -> tuple[int, int] | None:
    """Given the spool root, return (uid, gid) that what restore creates must have when running as root: the
    root's owner, or the service user's for a spool not made yet; None when not root (this user's own)."""
    if os.geteuid() != 0:
        return None
    if root.exists():
        st = root.stat()
        return st.st_uid, st.st_gid
    user = service_user()
    return (user.pw_uid, user.pw_gid) if user is not None else None


def _give(owner: tuple[int, int] | None, *paths: Path) -> None:
    """Given an owner (or None: leave them) and paths restore created, give them to that owner."""
    if owner is None:
        return
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.chown(path, *owner)


def _copy(source: Path, dest: Path, owner_of: Path | None = None) -> int:
    """Given a journal and a destination, copy it with the backup API to a temporary file, check it, give it
    the owner of ``owner_of`` (when given and running as root), rename it into place (removing a stale -wal and
    -shm beside it); return the number of sets in the copy."""
    if not source.is_file():
        raise UsageError(f"{source}: no such journal file")
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
            sets = _check(dst, source)
        finally:
            dst.close()
    except sqlite3.DatabaseError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{source} is not a readable onss-relay journal: {e}") from e
    finally:
        src.close()
    os.chmod(tmp, 0o640)
    if owner_of is not None and os.geteuid() == 0:
        st = owner_of.stat()
        os.chown(tmp, st.st_uid, st.st_gid)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    for stale in (dest.with_name(dest.name + "-wal"), dest.with_name(dest.name + "-shm")):
        stale.unlink(missing_ok=True)
    os.replace(tmp, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return sets


def _check(db: sqlite3.Connection, source: Path) -> int:
    """Given a fresh copy, check it is whole and a journal; return its number of sets."""
    (result,) = db.execute("PRAGMA quick_check").fetchone()
    if result != "ok":
        raise UsageError(f"{source} is damaged ({result}); keep the original and try an older backup")
    try:
        (count,) = db.execute("SELECT count(*) FROM sets").fetchone()
    except sqlite3.OperationalError as e:
        raise UsageError(f"{source} is not an onss-relay journal ({e})") from e
    return int(count)
