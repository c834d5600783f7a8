"""The local spool: outbox/, work/, sent/YYYY-MM-DD/, failed/, inbox/, results/ and durable file moves.

Nothing here is ever deleted: files move from the outbox to sent/ or failed/ (with a reason beside them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from onss_relay.config import PathsConfig
from onss_relay.durable import fsync_dir
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import ALL_FOLDERS

log = structlog.get_logger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".swp", ".partial", ".crdownload")


def is_temp_name(name: str) -> bool:
    """Given a file name, return True for names writers use while a file is incomplete (never touched)."""
    return name.startswith((".", "~")) or name.endswith(TEMP_SUFFIXES) or name.endswith("~")


def atomic_write(path: Path, data: bytes) -> None:
    """Given a path and bytes, write them under a temp name, fsync, rename over path, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk must not leave half-written temp files behind
        raise
    fsync_dir(path.parent)


class BatchWriter:
    """Files written under temp names in one folder, then made durable together: each fsynced (on ext4
    the first fsync's journal commit carries the others' data, so the rest cost little), renamed into
    place, and the folder fsynced once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pending: list[tuple[Path, Path, BinaryIO]] = []

    def write(self, name: str, data: bytes) -> None:
        target = self.folder / name
        tmp = target.with_name(f".{name}.tmp")
        f = tmp.open("wb")
        self._pending.append((tmp, target, f))
        f.write(data)
        f.flush()

    def commit(self) -> None:
        """Make every file written so far durable under its name; raise (and remove the temps) on failure."""
        try:
            for _, _, f in self._pending:
                os.fsync(f.fileno())
                f.close()
            for tmp, target, _ in self._pending:
                os.replace(tmp, target)
        except BaseException:
            self.abort()
            raise
        self._pending = []
        fsync_dir(self.folder)

    def abort(self) -> None:
        """Drop what was written and not committed (a full disk must not leave temp files behind)."""
        for tmp, _, f in self._pending:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []


def free_name(directory: Path, name: str) -> Path:
    """Given a folder and a name, return folder/name, or folder/name.1, .2 … if taken (nothing is overwritten)."""
    candidate = directory / name
    n = 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = directory / f"{name}.{n}"
    return candidate


def copy_durably(src: Path, dest: Path) -> None:
    """Given two paths, stream src to a temp name beside dest, fsync it, and rename it over dest."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    with src.open("rb") as fin, tmp.open("wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dest)


def move_durably(src: Path, dest_dir: Path, name: str | None = None, sync: bool = True) -> Path:
    """Given a file, move it into an existing dest_dir under a free name (name, name.1, …: nothing is
    overwritten); rename, or copy+fsync+unlink across filesystems.

    With sync=False the caller fsyncs dest_dir itself, once for several moves.
    """
    name = name or src.name
    dest = dest_dir / name
    while True:
        try:
            _place(src, dest)
            break
        except FileExistsError:
            if _same_file(src, dest):
                src.unlink()  # a crash came between link and unlink: the copy in dest_dir is this very file
                break
            dest = free_name(dest_dir, name)
    if sync:
        fsync_dir(dest_dir)
    return dest


def _place(src: Path, dest: Path) -> None:
    """Given a file and a free destination, put it there; raise FileExistsError if the name is taken."""
    try:
        # link + unlink rather than rename: the outbox watcher then sees a delete, which inotify delivers at
        # once, instead of an unmatched move-out, which watchdog holds back half a second with all behind it
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        if dest.exists() or dest.is_symlink():
            raise FileExistsError(errno.EEXIST, "name taken", str(dest)) from None
        if e.errno == errno.EXDEV:  # the outbox is on another filesystem (a mounted share)
            copy_durably(src, dest)
        else:  # no hard links here (some SMB shares)
            os.rename(src, dest)
            return
    src.unlink()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Spool:
    """Given the paths configuration, create and manage the local folders."""

    def __init__(self, paths: PathsConfig) -> None:
        self.paths = paths
        self.outbox = paths.outbox_dir
        self.inbox = paths.inbox_dir
        self.sent = paths.sent_dir
        self.failed = paths.failed_dir
        self.results = paths.results_dir
        self.work = paths.work_dir

    def create(self) -> None:
        for d in (self.outbox, self.sent, self.failed, self.results, self.work, self.inbox):
            d.mkdir(parents=True, exist_ok=True)
        for folder in ALL_FOLDERS:
            if folder.startswith("OUT"):
                (self.inbox / folder).mkdir(exist_ok=True)

    def outbox_files(self, row: SetRow) -> list[Path]:
        """Given a claimed set, return its files in the outbox: the FI parts and what came with them."""
        return [self.outbox / n for n in [*row.parts, *row.data.get("extras", [])]]

    def quarantine_claimed(self, journal: Journal, row: SetRow, reason: str, detail: str) -> None:
        """Given a claimed set that cannot be sent, move its files to failed/ and record it as failed."""
        self.quarantine(self.outbox_files(row), reason, detail, set=row.go_name)
        journal.transition(row.go_name, State.FAILED, detail=detail, reason=f"{reason}: {detail}")

    def quarantine(self, files: list[Path], reason: str, detail: str = "", **extra: Any) -> list[Path]:
        """Given outbox files and a reason, move them to failed/ with a <name>.reason.json beside each."""
        moved = []
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.failed.mkdir(parents=True, exist_ok=True)
        for f in files:
            if not f.exists():
                continue
            dest = move_durably(f, self.failed)
            record = {"reason": reason, "detail": detail, "at": at, "file": f.name} | extra
            atomic_write(dest.with_name(dest.name + ".reason.json"), json.dumps(record, indent=2).encode())
            moved.append(dest)
            log.warning("file_quarantined", file=f.name, reason=reason, detail=detail, to=str(dest))
        return moved

    def archive(self, sets: dict[str, list[Path]], day: dt.date | None = None) -> Path:
        """Given sent sets (GO name → local files), move each set's files with an empty GO into
        sent/YYYY-MM-DD/; fsync every folder touched once; return that folder."""
        dest = self.sent / (day or dt.date.today()).isoformat()
        dest.mkdir(parents=True, exist_ok=True)
        sources = set()
        for go_name, files in sets.items():
            for f in files:
                with contextlib.suppress(FileNotFoundError):  # moved before a crash, or a set without FS
                    move_durably(f, dest, sync=False)
                    sources.add(f.parent)
            with contextlib.suppress(FileExistsError):
                (dest / go_name).open("xb").close()  # empty: nothing to fsync but its folder entry
        fsync_dir(dest)
        for d in sources:
            fsync_dir(d)
        return dest
