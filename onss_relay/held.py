"""Released originals: an outbox FI whose copy was sent is never unlinked at once. It is renamed (same
filesystem: a writer's open descriptor follows the inode) into ``held/`` beside a record of what was sent, and
deleted at a later pass only while still identical (size, mtime, inode, ctime, digest) and held open by no
process the relay can see; one that changed goes whole to ``failed/`` saying the ONSS got an earlier version.

When the outbox is on another filesystem than the spool, the hold folder is ``<outbox>/.onss-relay-held/``
(a rename across filesystems would be a copy, and a writer would go on writing into the unlinked original).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from onss_relay.declaration import open_for_writing
from onss_relay.durable import BatchWriter, atomic_write, free_name, fsync_dir
from onss_relay.journal import SetRow

log = structlog.get_logger(__name__)

OUTBOX_HOLD = ".onss-relay-held"  # under the outbox when it is on another filesystem than the spool
RECORD = ".held.json"
SWEEP_PAGE = 200  # held originals checked per look in /proc (a look reads every process's open files)
SWEEP_MOST = 1000  # held originals looked at per pass: new outbox claims never wait behind a backlog

Quarantine = Callable[[list[Path], str, str, str], object]  # files, reason, detail, set


def hold_folders(root: Path, outbox: Path) -> list[Path]:
    """Given the spool root and the outbox, return the folders where released originals may be held."""
    return [root / "held", outbox / OUTBOX_HOLD]


def hold(root: Path, row: SetRow, original: Path, dest: Path) -> Path:
    """Given the spool root, a sent set, its unchanged outbox original and where its copy was archived, move
    the original into the hold folder with a record of what was sent; return where it is now held.

    The record is written first (a crash before the rename leaves a record without its file, dropped at the
    next pass); the inode and ctime, which the rename changes, are added after it."""
    name = original.name
    record = _record_for(row, original, dest)
    folder = root / "held"
    for attempt in (0, 1):
        folder.mkdir(exist_ok=True)
        target = free_name(folder, name)
        atomic_write(_record_of(target), json.dumps(record).encode())
        try:
            os.rename(original, target)
            break
        except OSError as e:
            _record_of(target).unlink(missing_ok=True)
            if e.errno != errno.EXDEV or attempt:
                raise
            folder = original.parent / OUTBOX_HOLD  # the outbox's own filesystem
    fsync_dir(folder)
    fsync_dir(original.parent)
    now = target.stat()
    atomic_write(_record_of(target), json.dumps(record | {"ino": now.st_ino, "ctime_ns": now.st_ctime_ns}).encode())
    log.info("original_held", file=name, set=row.go_name, held=str(target))
    return target


def hold_many(root: Path, originals: list[tuple[SetRow, Path]], dest: Path) -> list[Path]:
    """Given the spool root, sent sets' unchanged outbox originals and where their copies were archived, hold
    them all as ``hold`` does one, with the folder fsyncs shared: every record durable first (one fsync of
    held/), then the renames (one fsync of held/ and of each outbox folder). Each record is written once, with
    the inode the original keeps through a rename on its own filesystem. Return where each is held. An original
    on another filesystem goes through ``hold``.
    """
    folder = root / "held"
    folder.mkdir(exist_ok=True)
    records = BatchWriter(folder)
    planned: list[tuple[SetRow, Path, Path]] = []
    taken: set[str] = set()
    for row, original in originals:
        target = free_name(folder, original.name)
        n = 0
        while target.name in taken:  # never two of one batch under one name (free_name sees only the disk)
            n += 1
            target = free_name(folder, f"{original.name}.{n}")
        taken.add(target.name)
        records.write(_record_of(target).name, json.dumps(_record_for(row, original, dest, inode=True)).encode())
        planned.append((row, original, target))
    records.commit()  # each record durable before its original moves: a crash leaves a record without its file
    held: list[Path] = []
    elsewhere: list[tuple[SetRow, Path]] = []
    for row, original, target in planned:
        try:
            os.rename(original, target)
            held.append(target)
            log.info("original_held", file=original.name, set=row.go_name, held=str(target))
        except OSError as e:
            _record_of(target).unlink(missing_ok=True)
            if e.errno != errno.EXDEV:
                raise
            elsewhere.append((row, original))
    fsync_dir(folder)
    for parent in {original.parent for _, original, _ in planned}:
        fsync_dir(parent)
    return held + [hold(root, row, original, dest) for row, original in elsewhere]


def _record_for(row: SetRow, original: Path, dest: Path, inode: bool = False) -> dict[str, Any]:
    """Given a sent set, its outbox original and where its copy was archived, return the hold record of it
    (with ``inode``, the original's inode number: a rename within its filesystem keeps it)."""
    st = original.stat()
    record: dict[str, Any] = {
        "file": original.name,
        "set": row.go_name,
        "digest": row.data.digests[original.name],
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "held_at": time.time(),
        "sent_dir": str(dest),
    }
    return record | {"ino": st.st_ino} if inode else record


def sweep(
    root: Path, outbox: Path, keep_for: float, quarantine: Quarantine, stop: threading.Event | None = None
) -> int:
    """Given the spool root, the outbox, how long to hold released originals, the spool's quarantine and the
    relay's stop event, sweep the held originals once (``HeldSweep.sweep`` without a cursor kept between passes);
    return how many were looked at."""
    return HeldSweep().sweep(root, outbox, keep_for, quarantine, stop)


class HeldSweep:
    """The sweep of one relay's held originals, with a cursor kept between passes: the time before which no
    record can be due. A pass before it costs nothing (no listing, no stat, no parse); a pass after it lists the
    hold folders, stats each record (its mtime is when it was written, at or after its ``held_at``) and parses
    only the SWEEP_MOST oldest of those due by their mtime, never a record that is not due.

    Why the cursor is safe: every record not due at a listing is due at its mtime + keep_for or later, and every
    record written after the listing started has an mtime at or after that start, so it is due at start +
    keep_for or later; the cursor is the earliest of these. A record's mtime can only make it wait longer (a
    release needs both its mtime and its ``held_at`` past keep_for). A change of keep_for, a clock set back, a
    pass cut short (SWEEP_MOST, a stop) or one left held open for writing makes the next pass list again."""

    def __init__(self) -> None:
        self._next_look = 0.0  # wall time before which no record can be due
        self._listed_at = 0.0
        self._keep_for: float | None = None
        self.listings = 0  # how many passes listed the hold folders (read by a test)

    def sweep(
        self, root: Path, outbox: Path, keep_for: float, quarantine: Quarantine, stop: threading.Event | None = None
    ) -> int:
        """Given the spool root, the outbox, how long to hold released originals, the spool's quarantine and the
        relay's stop event, delete each held original held that long and still identical to what was sent; move
        each that changed to failed/ with why. One held open by a visible process waits for a later pass. Return
        how many were looked at.

        A pass looks at SWEEP_MOST at most (a backlog of thousands is worked off over several passes, so new
        outbox claims never wait behind it), a page at a time with one look in /proc per page, and ends between
        two files once ``stop`` is set."""
        now = time.time()
        if keep_for == self._keep_for and self._listed_at <= now < self._next_look:
            return 0
        self._keep_for, self._listed_at = keep_for, now
        self.listings += 1
        self._next_look = now  # until this pass ends: one cut short by an error lists again
        candidates, next_look, more = _due_by_mtime(root, outbox, keep_for, now)
        due = _records(candidates, keep_for, now)
        looked = 0
        while page := list(itertools.islice(due, SWEEP_PAGE)):
            checked: list[tuple[Path, dict[str, Any], str | None]] = []
            for held, record in page:
                if stop is not None and stop.is_set():
                    break
                try:
                    checked.append((held, record, changed(held, record)))
                except FileNotFoundError:
                    _record_of(held).unlink(missing_ok=True)
            busy = open_for_writing([held for held, _, why in checked if why is None])
            for held, record, why in checked:
                _settle(held, record, why, held in busy, quarantine)
            more = more or bool(busy)
            looked += len(checked)
            if stop is not None and stop.is_set():
                more = True
                break
        self._next_look = now if more else min(next_look, due.next_due)
        return looked


def _settle(held: Path, record: dict[str, Any], why: str | None, busy: bool, quarantine: Quarantine) -> None:
    """Given a held original due for release, its record, what changed in it (or None) and whether a process
    holds it open for writing, delete it, quarantine it saying why, or leave it for a later pass (busy)."""
    if why is None and busy:
        return
    if why is None:
        held.unlink()
        _record_of(held).unlink(missing_ok=True)
        log.info("original_released", file=record.get("file"), set=record.get("set"))
        return
    detail = (
        f"{record['file']} changed after its copy was signed and sent ({why}): the ONSS got an earlier "
        f"version, not this one; what the ONSS got is in {record.get('sent_dir')}"
    )
    quarantine([held], "changed after it was sent", detail, str(record.get("set", "")))
    _record_of(held).unlink(missing_ok=True)


def changed(held: Path, record: dict[str, Any]) -> str | None:
    """Given a held original and its record, return what changed since it was sent, or None if nothing did
    (its bytes are hashed whenever its size matches; a change of inode or ctime alone is a chmod or a link)."""
    from onss_relay.spool import file_digest

    st = held.stat()
    if st.st_size != record["size"]:
        return f"{record['size']} bytes when sent, {st.st_size} bytes now"
    digest = str(record["digest"])
    if file_digest(held, digest.partition(":")[0]) != digest:
        return "same size, different bytes"
    after = held.stat()
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        return "written to while it was checked"
    return None


def _due_by_mtime(root: Path, outbox: Path, keep_for: float, now: float) -> tuple[list[Path], float, bool]:
    """Given the spool root, the outbox, how long to hold released originals and the time the listing starts,
    stat each record in the hold folders (streamed: nothing kept per record not due); return the SWEEP_MOST
    oldest records due by their mtime, the earliest time another can be due, and whether more were due."""
    next_due = now + keep_for  # a record written after this listing started is due no earlier
    count = 0

    def due() -> Iterator[tuple[int, str]]:
        nonlocal next_due, count
        for folder in hold_folders(root, outbox):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.endswith(RECORD):
                        continue
                    try:
                        mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                    except OSError:
                        continue
                    if mtime_ns / 1e9 + keep_for <= now:
                        count += 1
                        yield mtime_ns, entry.path
                    else:
                        next_due = min(next_due, mtime_ns / 1e9 + keep_for)

    oldest = heapq.nsmallest(SWEEP_MOST, due())
    return [Path(path) for _, path in oldest], next_due, count > len(oldest)


class _records:
    """Given records due by their mtime, how long to hold and now: iterate over (held original, its record)
    for those whose ``held_at`` is past keep_for too, dropping records whose file is gone (a crash before the
    rename: the original is still in the outbox, and released again); ``next_due`` is the earliest ``held_at``
    + keep_for of those not due by it (a record whose mtime was set back)."""

    def __init__(self, candidates: list[Path], keep_for: float, now: float) -> None:
        self._it = iter(candidates)
        self._keep_for, self._now = keep_for, now
        self.next_due = float("inf")

    def __iter__(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        return self

    def __next__(self) -> tuple[Path, dict[str, Any]]:
        for rec in self._it:
            held = rec.with_name(rec.name[: -len(RECORD)])
            try:
                record = json.loads(rec.read_bytes())
            except (OSError, ValueError):
                continue
            if not held.exists():
                rec.unlink(missing_ok=True)
                continue
            if not isinstance(record, dict):
                continue
            due_at = _as_float(record.get("held_at")) + self._keep_for
            if due_at > self._now:
                self.next_due = min(self.next_due, due_at)
                continue
            return held, record
        raise StopIteration


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _record_of(held: Path) -> Path:
    return held.with_name(held.name + RECORD)
