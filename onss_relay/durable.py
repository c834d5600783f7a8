"""Durable files: every write, move and copy here survives a crash (temp name, fsync, rename, folder fsync).

Shared by the spool, the stages and the local transport; nothing here knows about declarations.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path
from typing import BinaryIO

from onss_relay import crash_point
from onss_relay.named_writes import naming
from onss_relay.process_pool import ProcessPool

COPY_CHUNK = 1 << 20
HOST = socket.gethostname().split(".")[0] or "host"  # in temp names: orphan_temps.py removes only its own host's
# host and pid are not enough: two containers' relays are both pid 1 and may share a host name (the host's
# network, a compose hostname); a token drawn once per process (a forked child keeps it, its pid differs)
_TOKEN = "t" + secrets.token_hex(3)  # "t": never read as a pid


def temp_name(name: str) -> str:
    """Given a file's name, return the hidden name it is written under first: ``.NAME.HOST-PID-TOKEN.tmp``, this
    process's own, so that two relays (or a relay and a command) writing the same file on a shared folder never
    share a temp file (one would rename or remove the other's)."""
    return f".{name}.{HOST}-{os.getpid()}-{_TOKEN}.tmp"


def fsync_dir(directory: Path) -> None:
    """Given a folder, fsync it so that names created, renamed or removed in it survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FSYNC_THREADS = 4  # runs of files fsynced at once by fsync_files, each by a thread of its own
_FSYNC_POOL = ProcessPool(FSYNC_THREADS, "fsync")


def fsync_files(files: list[tuple[Path, BinaryIO]]) -> None:
    """Given files just written (each with the path an error names), make each one's bytes durable, several at
    once: the disk takes the fsyncs of a signing batch (two files per set) together instead of one after the
    other (on this project's machines an fsync waited ~0.1–0.4 ms, a quarter of claiming and signing's time);
    raise the first error, by the files' order, after every fsync has ended.

    The files are cut into FSYNC_THREADS runs, each fsynced in turn by one thread: a thread per file cost ~0.12
    ms of CPU per set signed in hand-offs between threads (the machine's scarcest resource), and waited no less
    (on ext4 the first fsync's journal commit carries the data of those after it)."""

    def one(item: tuple[Path, BinaryIO]) -> None:
        with naming(item[0]):
            os.fsync(item[1].fileno())

    def run(items: list[tuple[Path, BinaryIO]]) -> OSError | None:
        """Fsync each of a run of files, on past one that fails; return the run's first error."""
        first: OSError | None = None
        for item in items:
            try:
                one(item)
            except OSError as e:
                first = first or e
        return first

    if len(files) < 2:
        for item in files:
            one(item)
        return
    size = -(-len(files) // FSYNC_THREADS)
    futures = [_FSYNC_POOL.get().submit(run, files[i : i + size]) for i in range(0, len(files), size)]
    wait(futures)  # every fsync ended before any file is closed (a caller's abort closes them on an error)
    for future in futures:  # the runs in the files' order
        if (error := future.result()) is not None:
            raise error


def sync_written(files: list[BinaryIO]) -> None:
    """Given files just written, all in one filesystem, make their bytes durable: on Linux one syncfs(2) of that
    filesystem (which reports a write-back error as fsync does, kernel 5.8 on), elsewhere an fsync each."""
    if not files:
        return
    for f in files:
        with naming(f.name):  # a full disk says which file
            f.flush()
    if _syncfs is not None and _syncfs(files[0].fileno()) == 0:
        return
    for f in files:
        with naming(f.name):
            os.fsync(f.fileno())


def _load_syncfs() -> Callable[[int], int] | None:
    """Return libc's syncfs, or None where there is none (not Linux, no libc found)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return fn


_syncfs = _load_syncfs() if sys.platform.startswith("linux") else None


def atomic_write(path: Path, data: bytes, sync: bool = True) -> None:
    """Given a path and bytes, write them under a temp name, fsync, rename over path, fsync the folder.

    With sync=False (files derived from the journal, rewritten at will) readers still never see half a file,
    but a power cut may lose the last version."""
    tmp = path.with_name(temp_name(path.name))
    try:
        with naming(path), tmp.open("wb") as f:  # a full disk says which file
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync:  # derived files (results) are not the effects the crash test aims at
            crash_point.renamed()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk must not leave half-written temp files behind
        raise
    if sync:
        fsync_dir(path.parent)


class BatchWriter:
    """Files written under temp names in one folder, then made durable together: each fsynced (on ext4
    the first fsync's journal commit carries the others' data, so the rest cost little), renamed into
    place, and the folder fsynced once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pending: list[tuple[Path, Path, BinaryIO]] = []

    def staged(self, name: str) -> Path:
        """Where ``name`` is written until the commit renames it into place (readable meanwhile)."""
        return self.folder / temp_name(name)

    def _open(self, name: str) -> tuple[Path, BinaryIO]:
        """Given a name, open its staged file; return the path it will have and the file (paths made once: two
        files per set signed)."""
        staged, target = self.staged(name), self.folder / name
        f = staged.open("wb")
        self._pending.append((staged, target, f))
        return target, f

    def write(self, name: str, data: bytes) -> None:
        target, f = self._open(name)
        with naming(target):  # a full disk says which file
            f.write(data)
            f.flush()

    def copy(self, name: str, src: Path, algorithm: str) -> bytes:
        """Given a file, copy it here as ``name`` (streamed, constant memory) and return the digest of exactly the
        bytes copied: a private snapshot that no writer of ``src`` can change afterwards."""
        target, f = self._open(name)
        h = hashlib.new(algorithm)
        with src.open("rb") as source, naming(target):
            while chunk := source.read(COPY_CHUNK):
                h.update(chunk)
                f.write(chunk)
            f.flush()
        return h.digest()

    def commit(self) -> None:
        """Make every file written so far durable under its name; raise (and remove the temps) on failure."""
        try:
            fsync_files([(target, f) for _, target, f in self._pending])
            for _, target, f in self._pending:
                with naming(target):
                    f.close()
            for tmp, target, _ in self._pending:
                os.replace(tmp, target)
                crash_point.renamed()
        except BaseException:
            self.abort()
            raise
        self._pending = []
        fsync_dir(self.folder)

    def discard(self, names: list[str]) -> None:
        """Given names written here and not committed, drop them (a set given up mid-batch leaves nothing)."""
        keep = []
        for tmp, target, f in self._pending:
            if target.name not in names:
                keep.append((tmp, target, f))
                continue
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = keep

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
    tmp = dest.with_name(temp_name(dest.name))
    with naming(dest), src.open("rb") as fin, tmp.open("wb") as fout:
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
            place_new(src, dest)
            crash_point.renamed()
            break
        except FileExistsError:
            if _same_file(src, dest):
                src.unlink()  # a crash came between link and unlink: the copy in dest_dir is this very file
                break
            dest = free_name(dest_dir, name)
    if sync:
        fsync_dir(dest_dir)
    return dest


def place_new(src: Path, dest: Path) -> None:
    """Given a file and a free destination, put it there; raise FileExistsError if the name is taken (never
    overwrite)."""
    try:
        # link + unlink rather than rename: the outbox watcher then sees a delete, which inotify delivers at
        # once, instead of an unmatched move-out, which watchdog holds back half a second with all behind it
        os.link(src, dest, follow_symlinks=False)  # a symbolic link moves as itself, never as its target
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        if dest.exists() or dest.is_symlink():
            raise FileExistsError(errno.EEXIST, "name taken", str(dest)) from None
        if e.errno == errno.EXDEV and src.is_symlink():  # a link moves as itself, never as a copy of its target
            os.symlink(os.readlink(src), dest)
            fsync_dir(dest.parent)
        elif e.errno == errno.EXDEV:  # the outbox is on another filesystem (a mounted share)
            copy_durably(src, dest)
            fsync_dir(dest.parent)  # the copy's name is durable before the only other copy goes
        else:  # no hard links here (some SMB shares)
            os.rename(src, dest)
            return
    src.unlink()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
