"""`onss-relay requeue NAME`: put a quarantined set back in the outbox, all its files at once, to be sent again.

Putting parts back by hand, one at a time, re-quarantines them (the first part alone is an incomplete set).
Here every file of the set moves from failed/ to the outbox under a temporary name (``.NAME.requeue.tmp``)
and is then linked in under its own name, never over a file already there: a corrected declaration dropped
meanwhile is never overwritten. The reason files go once the files are back. A requeue cut short (a crash,
a kill) is completed, or undone when a file of the same name arrived meanwhile, by the next requeue and by
``send``/``run`` at start (``finish_interrupted_requeues``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import structlog

from onss_relay.config import Config
from onss_relay.durable import fsync_dir, move_durably, place_new
from onss_relay.errors import InvalidName, UsageError
from onss_relay.journal import DataChange, State, journal_exists, journal_location, open_journal
from onss_relay.local_time import local_time
from onss_relay.names import parse_name, set_key
from onss_relay.spool import Spool, quarantine_result_name

log = structlog.get_logger(__name__)

STAGED_SUFFIX = ".requeue.tmp"


def requeue(cfg: Config, name: str, out: TextIO, force: bool = False) -> int:
    """Given a GO, FI or FS name of a quarantined set, move its files back into the outbox (with ``force``, first
    record in the journal that it may go although its content was sent recently); return 0.

    Refuses (UsageError, nothing moved) when a file of the same name is already in the outbox."""
    try:
        key = set_key(parse_name(Path(name).name))
    except InvalidName as e:
        raise UsageError(f"{name}: not a declaration file or set name ({e.field} {e.why})") from None
    spool = Spool(cfg.paths)
    with requeue_lock(spool):
        if key in _finish_interrupted(spool):
            print(f"requeued {key}: an earlier requeue of it, cut short, was completed", file=out)
            return 0
        files = _quarantined_files(spool, key)
        if not files:
            raise UsageError(f"{name}: nothing of set {key} is in {spool.failed}")
        _refuse_sent(cfg, name, key)
        _refuse_overwrite(spool, name, [f.name for f in files])
        if force:
            _allow_same_content(cfg, key)
        for f in files:
            _stage(spool, f)
        placed = _bring_in(spool, key)
    print(f"requeued {key}: {', '.join(placed)} back in {spool.outbox}", file=out)
    return 0


def finish_interrupted_requeues(spool: Spool) -> list[str]:
    """Given the spool, complete every requeue cut short (files left under ``.NAME.requeue.tmp`` in the
    outbox), or undo it (the files back in failed/) when a file of the same name arrived in the outbox
    meanwhile; return the set names completed."""
    with requeue_lock(spool):
        return _finish_interrupted(spool)


def _finish_interrupted(spool: Spool) -> list[str]:
    done = []
    for key, temps in _staged_sets(spool).items():
        clashes = [t for t in temps if _clash(t, spool.outbox / _final_name(t))]
        if clashes:
            _undo(spool, temps, f"{', '.join(_final_name(t) for t in clashes)} arrived in the outbox meanwhile")
            continue
        for f in _quarantined_files(spool, key):
            _stage(spool, f)
        _bring_in(spool, key)
        log.warning("requeue_completed", set=key, detail="a requeue cut short was completed")
        done.append(key)
    return done


@contextlib.contextmanager
def requeue_lock(spool: Spool) -> Iterator[None]:
    """Hold the spool's requeue lock (a requeue and a starting relay never move the same files at once)."""
    spool.paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool.paths.root / "requeue.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _refuse_sent(cfg: Config, name: str, key: str) -> None:
    """Given a set name, raise UsageError when the journal has a set of that name in flight or sent (a corrected
    declaration of the same name went through after this one was quarantined): the ONSS refuses a second GO."""
    if not journal_exists(cfg):
        return
    journal = open_journal(cfg, readonly=True)
    try:
        row = journal.get_set(key)
    finally:
        journal.close()
    if row is not None and row.state != State.FAILED:
        when = local_time(row.updated_at)
        raise UsageError(
            f"{name}: not requeued, a set named {key} went through since it was quarantined (now {row.state}, {when}) "
            "and the ONSS refuses a second use of that name (ACRF-133); give the declaration a new sequence number"
        )


def _refuse_overwrite(spool: Spool, name: str, names: list[str]) -> None:
    taken = [n for n in names if _taken(spool.outbox / n)]
    if taken:
        raise UsageError(
            f"{name}: not requeued, {', '.join(taken)} is already in {spool.outbox} and requeue never overwrites"
            " a file; send or move that one first, then requeue again"
        )


def _stage(spool: Spool, f: Path) -> None:
    """Given a quarantined file, move it into the outbox under its staged name, dated now."""
    temp = move_durably(f, spool.outbox, f".{f.name}{STAGED_SUFFIX}")
    os.utime(temp)


def _bring_in(spool: Spool, key: str) -> list[str]:
    """Given a set whose files are all staged, link each in under its own name (never over another file),
    then remove their reason files; return the names placed. A clash undoes the rest and raises UsageError."""
    temps = _staged_sets(spool).get(key, [])
    placed = []
    for temp in temps:
        final = spool.outbox / _final_name(temp)
        try:
            place_new(temp, final)
        except FileExistsError:
            if not _same_file(temp, final):
                fsync_dir(spool.outbox)
                rest = [t for t in temps if t.exists()]
                _undo(spool, rest, f"{final.name} arrived in the outbox while it was requeued")
                raise UsageError(
                    f"{final.name}: a file of that name arrived in {spool.outbox} during the requeue; "
                    f"{', '.join(_final_name(t) for t in rest)} went back to {spool.failed}"
                ) from None
            temp.unlink()  # linked in before a crash: the outbox file is this very file
        placed.append(final.name)
    fsync_dir(spool.outbox)
    _drop_reasons(spool, key)
    return placed


def _drop_reasons(spool: Spool, key: str) -> None:
    """Given a set brought back into the outbox, remove the reason file of each of its files no longer in
    failed/ (those placed now, and those a requeue cut short placed before it was killed)."""
    for record in spool.failed.glob("*.reason.json"):
        name = record.name.removesuffix(".reason.json")
        if _belongs(name, key) and not _taken(spool.failed / name):
            record.unlink(missing_ok=True)
            (spool.results / quarantine_result_name(name)).unlink(missing_ok=True)  # no longer quarantined
    fsync_dir(spool.failed)


def _undo(spool: Spool, temps: list[Path], why: str) -> None:
    """Given staged files, put them back in failed/ (their reason files are still there) and say why."""
    for temp in temps:
        move_durably(temp, spool.failed, _final_name(temp))
    log.warning(
        "requeue_undone", files=[_final_name(t) for t in temps], detail=f"{why}; the set stays in {spool.failed}"
    )


def _staged_sets(spool: Spool) -> dict[str, list[Path]]:
    staged: dict[str, list[Path]] = {}
    for p in sorted(spool.outbox.glob(f".*{STAGED_SUFFIX}")):
        with contextlib.suppress(InvalidName):
            staged.setdefault(set_key(parse_name(_final_name(p))), []).append(p)
    return staged


def _quarantined_files(spool: Spool, key: str) -> list[Path]:
    return sorted(p for p in spool.failed.iterdir() if _belongs(p.name, key))


def _final_name(temp: Path) -> str:
    return temp.name.removeprefix(".").removesuffix(STAGED_SUFFIX)


def _clash(temp: Path, final: Path) -> bool:
    """Whether final is another file than the staged one (not the same file linked in before a crash)."""
    return _taken(final) and not _same_file(temp, final)


def _taken(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _belongs(file_name: str, key: str) -> bool:
    if file_name.endswith(".reason.json"):
        return False
    try:
        return set_key(parse_name(file_name)) == key
    except InvalidName:
        return False


def _allow_same_content(cfg: Config, key: str) -> None:
    """Given a quarantined set, record in the journal that its content may go again (`requeue --force`)."""
    journal = open_journal(cfg)
    try:
        if journal.get_set(key) is None:
            raise UsageError(f"{key}: not in the journal {journal_location(cfg)}; --force has nothing to record")
        journal.update_data(key, DataChange(same_content_ok=True))
    finally:
        journal.close()
