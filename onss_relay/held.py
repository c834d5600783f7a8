"""Released originals: an outbox FI whose copy was sent is never unlinked at once. It is renamed (same
filesystem: a writer's open descriptor follows the inode) into ``held/`` beside a record of what was sent, and
deleted at a later pass only while still identical (size, mtime, inode, ctime, digest) and held open by no
process the relay can see; one that changed goes whole to ``failed/`` saying the ONSS got an earlier version.
The originals of a batch of sent sets are held together in ``held/<batch>/`` under one record (one file created
per batch, not one per set); a lone one, and those held before batches, in ``held/`` beside ``<name>.held.json``.

When the outbox is on another filesystem than the spool, the hold folder is ``<outbox>/.onss-relay-held/``
(a rename across filesystems would be a copy, and a writer would go on writing into the unlinked original)."""

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
from onss_relay.stages.uncertain import boot_id, boottime

log = structlog.get_logger(__name__)

OUTBOX_HOLD = ".onss-relay-held"  # under the outbox when it is on another filesystem than the spool
RECORD = ".held.json"  # one original's record (``hold``; and every record written before batch records)
BATCH_RECORD = ".held-batch.json"  # the records of a batch of originals held together (``hold_many``)
SWEEP_PAGE = 200  # held originals checked per look in /proc (a look reads every process's open files)
RECORD_GRACE = 60.0  # seconds a record with no original yet is left alone (its renames may still come)
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
    them all as ``hold`` does one, with one record and one folder for the batch: ``held/<batch>/`` and beside it
    ``held/<batch>.held-batch.json``, durable first (one file, one fsync of held/), then the renames into the
    batch's folder (one fsync of it and of each outbox folder). The record is written once and never rewritten:
    the sweep deletes it with the last of its originals, and no later batch takes a name of its folder. Each entry
    has the inode the original keeps through a rename on its own filesystem. Return where each is held. An
    original on another filesystem goes through ``hold``.
    """
    if not originals:
        return []
    batch = f"batch-{time.time_ns()}-{os.getpid()}"
    folder = root / "held" / batch
    folder.mkdir(parents=True)
    planned: list[tuple[SetRow, Path, Path]] = []
    entries: dict[str, dict[str, Any]] = {}
    booted = boot_id()  # read once per batch: a file read per original was a tenth of holding it
    for row, original in originals:
        name, n = original.name, 0
        while name in entries:  # the same name twice in one batch (sets sent again): never one over the other
            n += 1
            name = f"{original.name}.{n}"
        entries[name] = _record_for(row, original, dest, inode=True, booted=booted)
        planned.append((row, original, folder / name))
    record = BatchWriter(folder.parent)
    record.write(batch + BATCH_RECORD, json.dumps({"held": entries}).encode())
    record.commit()  # with the folder's name, durable before any original moves: a crash leaves entries unheld
    held: list[Path] = []
    elsewhere: list[tuple[SetRow, Path]] = []
    said = log.bind()  # made once for the batch, not per line (log.py, above setup_logging)
    for row, original, target in planned:
        try:
            os.rename(original, target)
            held.append(target)
            said.info("original_held", file=original.name, set=row.go_name, held=str(target))
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            elsewhere.append((row, original))  # its entry names no file: gone with the record
    fsync_dir(folder)
    for parent in {original.parent for _, original, _ in planned}:
        fsync_dir(parent)
    return held + [hold(root, row, original, dest) for row, original in elsewhere]


def _record_for(
    row: SetRow, original: Path, dest: Path, inode: bool = False, booted: str | None = None
) -> dict[str, Any]:
    """Given a sent set, its outbox original and where its copy was archived, return the hold record of it
    (with ``inode``, the original's inode number: a rename within its filesystem keeps it; ``booted``: the
    kernel's boot id when already read)."""
    st = original.stat()
    record: dict[str, Any] = {
        "file": original.name,
        "set": row.go_name,
        "digest": row.data.digests[original.name],
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "held_at": time.time(),
        "boottime": boottime(),  # the time held is counted on this clock: NTP never steps it
        "boot_id": boot_id() if booted is None else booted,
        "sent_dir": str(dest),
    }
    return record | {"ino": st.st_ino} if inode else record


def sweep(
    root: Path, outbox: Path, keep_for: float, quarantine: Quarantine, stop: threading.Event | None = None
) -> int:
    """Given the spool root, the outbox, how long to hold released originals, the spool's quarantine and the
    relay's stop event, sweep the held originals once (``HeldSweep.sweep`` with no cursor kept between passes);
    return how many were looked at."""
    return HeldSweep().sweep(root, outbox, keep_for, quarantine, stop)


class HeldSweep:
    """The sweep of one relay's held originals, with a cursor kept between passes: the wall time before which no
    record can be due. A pass before it makes no system call; a pass after it lists the hold folders (streamed),
    stats each record, lone or batch (its mtime is when it was written, at or after its originals' ``held_at``),
    and parses only the SWEEP_MOST oldest of those due by their mtime (and any whose mtime is ahead of the wall
    clock: one set back since).

    The cursor only makes a pass happen, never a release: an original goes only once ``held_for`` (the boot
    clock) says keep_for, so a wall clock stepped forward releases nothing early. Every record not due at a
    listing is due at its mtime + keep_for or later, or when ``held_for`` says (for one due by its mtime only),
    and every record written after the listing started is due at that start + keep_for or later: the cursor is
    the earliest of these. A keep_for change, a wall clock set back before the last listing's start, a pass cut
    short (SWEEP_MOST, a stop, an error) or an original left held open makes the next pass list again."""

    def __init__(self) -> None:
        self._next_look = 0.0  # wall time before which no record can be due
        self._listed_at = 0.0  # wall time the last listing started
        self._keep_for: float | None = None
        self.listings = 0  # how many passes listed the hold folders (read by tests and the bench)

    def sweep(
        self, root: Path, outbox: Path, keep_for: float, quarantine: Quarantine, stop: threading.Event | None = None
    ) -> int:
        """Given the spool root, the outbox, how long to hold released originals, the spool's quarantine and the
        relay's stop event, delete each held original held that long and still identical to what was sent; move
        each that changed to failed/ with why. One held open by a visible process waits for a later pass. Return
        how many were looked at.

        A pass looks at SWEEP_MOST at most (a backlog of thousands is worked off over several passes, so new
        outbox claims never wait behind it), a page at a time with one look in /proc per page, and ends between
        two files once ``stop`` is set. A batch record goes with the last of its originals."""
        now = time.time()
        if keep_for == self._keep_for and self._listed_at <= now < self._next_look:
            return 0
        self._keep_for, self._listed_at, self._next_look = keep_for, now, now  # an error: the next pass lists
        self.listings += 1
        listing = _Listing(root, outbox, keep_for, now)
        looked, cut_short = _release(listing.due(stop), quarantine, stop)
        self._next_look = now if cut_short or listing.more else listing.next_due
        return looked


def _release(
    due: Iterator[tuple[Path, dict[str, Any], Path]], quarantine: Quarantine, stop: threading.Event | None
) -> tuple[int, bool]:
    """Given the held originals due (with their records and the records' files), the quarantine and the stop
    event, settle SWEEP_MOST of them at most, a page per look in /proc; return how many were looked at and
    whether the pass was cut short (the cap reached, a stop, an original left held open)."""
    taken = [0]

    def counted() -> Iterator[tuple[Path, dict[str, Any], Path]]:
        for item in itertools.islice(due, SWEEP_MOST):
            taken[0] += 1
            yield item

    items, looked, kept = counted(), 0, False
    while page := list(itertools.islice(items, SWEEP_PAGE)):
        n, busy = _settle_page(page, quarantine, stop)
        looked, kept = looked + n, kept or busy
        if stop is not None and stop.is_set():
            break
    return looked, kept or taken[0] >= SWEEP_MOST or (stop is not None and stop.is_set())


def _settle_page(
    page: list[tuple[Path, dict[str, Any], Path]], quarantine: Quarantine, stop: threading.Event | None
) -> tuple[int, bool]:
    """Given a page of held originals due, the quarantine and the stop event, settle each (one look in /proc for
    the page) until ``stop`` is set; return how many were looked at and whether one was left held open."""
    checked: list[tuple[Path, dict[str, Any], Path, str | None]] = []
    for held, record, source in page:
        if stop is not None and stop.is_set():
            break
        try:
            checked.append((held, record, source, changed(held, record)))
        except FileNotFoundError:
            _forget(source)
    busy = open_for_writing([held for held, _, _, why in checked if why is None])
    for held, record, source, why in checked:
        if _settle(held, record, why, held in busy, quarantine):
            _forget(source)
    for source in {source for _, _, source in page if source.name.endswith(BATCH_RECORD)}:
        _forget_batch_if_done(source)
    return len(checked), bool(busy)


def _settle(held: Path, record: dict[str, Any], why: str | None, busy: bool, quarantine: Quarantine) -> bool:
    """Given a held original due for release, its record, what changed in it (or None) and whether a process
    holds it open for writing, delete it, quarantine it saying why, or leave it for a later pass (busy); return
    whether it left held/."""
    if why is None and busy:
        return False
    if why is None:
        held.unlink()
        log.info("original_released", file=record.get("file"), set=record.get("set"))
        return True
    detail = (
        f"{record['file']} changed after its copy was signed and sent ({why}): the ONSS got an earlier "
        f"version, not this one; what the ONSS got is in {record.get('sent_dir')}"
    )
    quarantine([held], "changed after it was sent", detail, str(record.get("set", "")))
    return True


def _forget(source: Path) -> None:
    """Given the record of an original that left held/, delete it if it is that original's own (a batch record
    goes with the last of its batch: ``_forget_batch_if_done``)."""
    if not source.name.endswith(BATCH_RECORD):
        source.unlink(missing_ok=True)


def _forget_batch_if_done(source: Path) -> None:
    """Given a batch record, delete it and its folder once none of its originals is held any more."""
    entries = _batch_entries(source)
    if entries is not None and not any(_is_held(source, name) for name in entries):
        _drop_batch(source)


def _drop_batch(source: Path) -> None:
    """Given a batch record none of whose originals is held, delete its folder (if empty), then the record."""
    with contextlib.suppress(FileNotFoundError):
        _batch_folder(source).rmdir()  # OSError if not empty: something else is there, the record stays
    source.unlink(missing_ok=True)


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


def held_for(record: dict[str, Any]) -> float:
    """Given a hold record, return the seconds since it was held: on the boot clock within the boot that held it
    (a wall clock stepped forward by NTP or a resumed VM released originals early), on the wall clock after a
    reboot (its writers died with it) or for a record older than the boot clock's fields."""
    if "boottime" in record and record.get("boot_id") == boot_id():
        return boottime() - float(record["boottime"])
    return time.time() - float(record.get("held_at", 0))


class _Listing:
    """One listing of the hold folders at a wall time: the SWEEP_MOST oldest records due by their mtime (``more``
    when there were more), then (``due``) the originals held keep_for under them by ``held_for``; ``next_due`` is
    the earliest wall time another can be due. (A batch record left alone for RECORD_GRACE needs no time of its
    own: read with keep_for under RECORD_GRACE, the next listing is due by keep_for; with keep_for over it, the
    record is older than RECORD_GRACE when read.)"""

    def __init__(self, root: Path, outbox: Path, keep_for: float, now: float) -> None:
        self.keep_for, self.now = keep_for, now
        self.next_due = now + keep_for  # a record written after this listing started is due no earlier
        self.more = False
        self.records = self._oldest_due(hold_folders(root, outbox))

    def _oldest_due(self, folders: list[Path]) -> list[Path]:
        """Given the hold folders, stat each record (streamed: nothing kept of one not due); return the
        SWEEP_MOST oldest due by their mtime or with an mtime ahead of now (the wall clock set back since)."""
        count = 0

        def due() -> Iterator[tuple[int, str]]:
            nonlocal count
            for folder in folders:
                with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as entries:
                    for entry in entries:
                        if not entry.name.endswith((RECORD, BATCH_RECORD)):
                            continue
                        try:
                            mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                        except OSError:
                            continue
                        if mtime_ns / 1e9 + self.keep_for <= self.now or mtime_ns / 1e9 > self.now:
                            count += 1
                            yield mtime_ns, entry.path
                        else:
                            self.next_due = min(self.next_due, mtime_ns / 1e9 + self.keep_for)

        oldest = heapq.nsmallest(SWEEP_MOST, due())
        self.more = count > len(oldest)
        return [Path(path) for _, path in oldest]

    def due(self, stop: threading.Event | None) -> Iterator[tuple[Path, dict[str, Any], Path]]:
        """Given the stop event, yield each original held keep_for (``held_for``) under the records listed, with
        its record and the record's file, until ``stop`` is set; keep in ``next_due`` when the others are due."""
        for rec in self.records:
            for held, record in _held_under(rec):
                if stop is not None and stop.is_set():
                    return
                left = self.keep_for - held_for(record)
                if left <= 0:
                    yield held, record, rec
                else:
                    self.next_due = min(self.next_due, self.now + left)


def _held_under(rec: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Given a record's file, yield each original held under it with its record; drop a record none of whose
    originals is held (a crash before the renames: the originals are still in the outbox, and released again), a
    batch record once older than RECORD_GRACE (a batch being held has its record before its renames)."""
    if not rec.name.endswith(BATCH_RECORD):
        held = rec.with_name(rec.name[: -len(RECORD)])
        try:
            record = json.loads(rec.read_bytes())
        except OSError:
            return
        except ValueError as e:
            _set_aside_damaged(rec, str(e))
            return
        if not held.exists():
            rec.unlink(missing_ok=True)  # a sweep during ``hold``: it writes the record again after its rename
        elif isinstance(record, dict):
            yield held, record
        else:
            _set_aside_damaged(rec, "not a JSON object")
        return
    entries = _batch_entries(rec)
    if entries is None:
        return
    live = [(_batch_folder(rec) / name, e) for name, e in entries.items() if _is_held(rec, name)]
    if not live:
        _drop_if_old(rec)
    yield from live


def _set_aside_damaged(rec: Path, why: str) -> None:
    """Given a hold record that cannot be read (damaged on disk), rename it ``….damaged`` so that it never again
    takes a sweep's place (damaged records are the oldest due: a thousand of them kept every good original behind
    them held), and say so once; the originals it held stay in held/ for a person, never deleted unchecked."""
    with contextlib.suppress(OSError):
        os.rename(rec, rec.with_name(rec.name + ".damaged"))
        log.warning(
            "held_record_damaged",
            record=str(rec),
            error=why,
            detail="set aside as .damaged; the originals it held stay in held/ until a person removes them",
        )


def _drop_if_old(rec: Path) -> None:
    """Given a batch record none of whose originals is held, drop it once older than RECORD_GRACE (a batch being
    held has its record before its renames, and the daemon sweeps while its uploader holds)."""
    with contextlib.suppress(OSError):
        if time.time() - rec.stat().st_mtime > RECORD_GRACE:
            _drop_batch(rec)


def _batch_entries(rec: Path) -> dict[str, dict[str, Any]] | None:
    """Given a batch record, return its entries (held name → record), or None when it cannot be read."""
    try:
        doc = json.loads(rec.read_text())
    except OSError:
        return None
    except ValueError as e:
        _set_aside_damaged(rec, str(e))
        return None
    entries = doc.get("held") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        _set_aside_damaged(rec, "no 'held' object")
        return None
    return {k: v for k, v in entries.items() if isinstance(v, dict)}


def _batch_folder(rec: Path) -> Path:
    """Given a batch record, return the folder its originals are held in."""
    return rec.with_name(rec.name[: -len(BATCH_RECORD)])


def _is_held(rec: Path, name: str) -> bool:
    """Given a batch record and the name of one of its entries, return whether that original is held."""
    return (_batch_folder(rec) / name).exists()


def _record_of(held: Path) -> Path:
    return held.with_name(held.name + RECORD)
