"""The local spool: outbox/, work/, sent/YYYY-MM-DD/, failed/, inbox/, results/, and its one-relay lock.

Nothing here is ever deleted: files move from the outbox to sent/ or failed/ (with a reason beside them).
Durable writes and moves: ``durable.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from onss_relay.config import PathsConfig
from onss_relay.declaration import open_for_writing
from onss_relay.durable import atomic_write, free_name, fsync_dir, move_durably
from onss_relay.errors import InvalidName, RelayError
from onss_relay.held import hold_many
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import ALL_FOLDERS, parse_name, set_key

log = structlog.get_logger(__name__)

TEMP_SUFFIXES = (".tmp", ".part", ".swp", ".partial", ".crdownload")


def is_temp_name(name: str) -> bool:
    """Given a file name, return True for names writers use while a file is incomplete (never touched)."""
    return name.startswith((".", "~")) or name.endswith(TEMP_SUFFIXES) or name.endswith("~")


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
        # told by the outbox watcher: whether events say a file is open or being written (never, without it)
        self.still_open: Callable[[str], bool] = lambda name: False
        # the relay's stop (SIGTERM), set by its owner: long walks over the spool's folders end between two files
        self.stop = threading.Event()
        # told by the daemon: raises Fenced once this relay may no longer change the shared spool (its lease lost)
        self.fence: Callable[[], None] = lambda: None

    def create(self) -> None:
        for d in (self.outbox, self.sent, self.failed, self.results, self.work, self.inbox):
            d.mkdir(parents=True, exist_ok=True)
        for folder in ALL_FOLDERS:
            if folder.startswith("OUT"):
                (self.inbox / folder).mkdir(exist_ok=True)

    def outbox_files(self, row: SetRow) -> list[Path]:
        """Given a claimed set, return its files in the outbox: the FI parts and what came with them."""
        return [self.outbox / n for n in [*row.parts, *row.data.extras]]

    def sent_files(self, row: SetRow) -> list[Path]:
        """Given a set, return the files that go to sent/ once it is sent: the FI bytes that were signed and
        sent (the private copies in work/; the outbox files for sets signed before copies were made), what
        came with them in the outbox, and the FS files."""
        fis = [self.work / n if n in row.data.digests else self.outbox / n for n in row.parts]
        return fis + [self.outbox / n for n in row.data.extras] + [self.work / n for n in row.data.fs]

    def archive_sets(self, rows: list[SetRow]) -> Path:
        """Given sent sets, move what was sent into sent/YYYY-MM-DD/ (``archive``), then release each outbox FI
        whose copy was sent (``release_originals``)."""
        self.fence()  # a relay that lost its lease moves nothing of sets a new leader now handles
        dest = self.archive({row.go_name: self.sent_files(row) for row in rows})
        self.fence()
        self.release_originals(rows, dest)
        return dest

    def release_originals(self, rows: list[SetRow], dest: Path) -> None:
        """Given sent sets and where their copies went, remove each outbox FI that is unchanged since its claim
        (size, mtime, inode, ctime, and its digest where cheap) and that no writer holds open; keep any other
        whole in failed/ with why (a writer still appending to it goes on writing into failed/)."""
        present = []
        for row in rows:
            for name in row.data.digests:
                with contextlib.suppress(FileNotFoundError):  # released before a crash
                    present.append((row, self.outbox / name, (self.outbox / name).stat()))
        held = open_for_writing([p for _, p, _ in present]) if present else set()
        unchanged = []
        for row, original, st in present:
            why = self._why_keep(row, original, st, original in held)
            if why is None and _stamp(original.stat()) != _stamp(st):  # changed while we looked
                why = _changed_after_sent(original.name)
            if why is None:  # never unlinked at once: held, and deleted later if still unchanged (held.py)
                unchanged.append((row, original))
            else:
                self.quarantine([original], why[0], f"{why[1]}; what the ONSS got is in {dest}", set=row.go_name)
        if unchanged:
            hold_many(self.paths.root, unchanged, dest)

    def _why_keep(self, row: SetRow, original: Path, st: os.stat_result, held: bool) -> tuple[str, str] | None:
        """Given a sent set's outbox original, return (reason, detail) when it must not be removed, else None."""
        name = original.name
        changed = _changed_after_sent(name)
        if not same_as_signed(row, original, st):
            return changed
        if held or self._still_open(name):
            return (
                "still open when it was sent",
                f"{name} was held open (a writer may still be adding to it) when its copy was sent: the ONSS got "
                "the bytes written until then, and may lack what follows",
            )
        return None

    def _still_open(self, name: str) -> bool:
        """Whether filesystem events say a file is open or being written, waited out for a moment (our own
        reads show as opens a little late)."""
        deadline = time.monotonic() + 1.0
        while self.still_open(name):
            if time.monotonic() > deadline:
                return True
            time.sleep(0.05)
        return False

    def quarantine_claimed(self, journal: Journal, row: SetRow, reason: str, detail: str) -> None:
        """Given a claimed set that cannot be sent, move its files to failed/ and record it as failed.

        Files first, journal second: a crash in between leaves the set in flight with its files in failed/,
        and the next stage to touch it finds them there (``why_gone``) and records the same reason.
        """
        self.quarantine(self.outbox_files(row), reason, detail, set=row.go_name)
        journal.transition(row.go_name, State.FAILED, detail=detail, reason=f"{reason}: {detail}")
        for name in [*row.data.digests, *row.data.fs]:  # its signed copies and FS: derived, never to be sent
            (self.work / name).unlink(missing_ok=True)

    def why_gone(self, row: SetRow, name: str) -> tuple[str, str]:
        """Given a claimed set and one of its files no longer in the outbox, return (reason, detail) to record:
        the quarantine reason when a crash interrupted its quarantine, else that it vanished."""
        record = self.failed / f"{name}.reason.json"
        try:
            recorded = json.loads(record.read_text())
            return str(recorded["reason"]), f"{recorded.get('detail', '')} (found in failed/ after a restart)"
        except (OSError, ValueError, KeyError, TypeError):
            return (
                "declaration vanished from the outbox",
                f"{name} is no longer in {self.outbox} (moved or deleted after it was claimed); nothing was sent",
            )

    def why_unreadable(self, row: SetRow, name: str, error: OSError) -> tuple[str, str]:
        """Given a claimed set and the error met reading one of its files, return (reason, detail) to quarantine
        it with."""
        if isinstance(error, FileNotFoundError):
            return self.why_gone(row, name)
        return "cannot read the declaration", f"{name}: {error.strerror or error}"

    def quarantine(self, files: list[Path], reason: str, detail: str = "", **extra: Any) -> list[Path]:
        """Given outbox files and a reason, move them to failed/ with a <name>.reason.json beside each.

        The reason is written first: a file is never in failed/ without it (a full disk or a crash stops
        before the move, and the file stays where it was)."""
        self.fence()
        moved = []
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.failed.mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (f.exists() or f.is_symlink()):  # a dangling link is quarantined too
                continue
            target = free_name(self.failed, f.name)
            record = {"reason": reason, "detail": detail, "at": at, "file": f.name} | extra
            atomic_write(target.with_name(target.name + ".reason.json"), json.dumps(record, indent=2).encode())
            dest = move_durably(f, self.failed, target.name)
            moved.append(dest)
            log.warning("file_quarantined", file=f.name, reason=reason, detail=detail, to=str(dest))
            self._tell_results(f.name, record | {"state": "quarantined", "failed_path": str(dest)})
        return moved

    def _tell_results(self, name: str, record: dict[str, Any]) -> None:
        """Given a quarantined file and its record, write results/<file name>.quarantined.json, so that a system
        that reads only the results folder (an HR side in another container) learns of it and why. The suffix
        keeps it apart from a set's own results/<GO name>.json (a GO file dropped again once overwrote it)."""
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            atomic_write(self.results / quarantine_result_name(name), json.dumps(record, indent=2).encode())
        except OSError as e:  # the file is in failed/ with its reason all the same
            log.warning("result_unwritable", file=name, error=str(e))

    def unclaimed(self, journal: Journal) -> list[tuple[str, float]]:
        """The outbox files no set in flight holds yet, with their age in seconds: settling, a set waiting for
        its other parts, a file still being written, or one about to be quarantined."""
        now = time.time()
        out = []
        with os.scandir(self.outbox) as entries:
            for e in entries:
                if is_temp_name(e.name) or not e.is_file(follow_symlinks=False) or _in_flight(journal, e.name):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    out.append((e.name, now - e.stat(follow_symlinks=False).st_mtime))
        return sorted(out)

    def quarantined(self) -> list[dict[str, Any]]:
        """The reason records of the files in failed/, newest first (a record whose file is not there is left
        out: a requeue in progress, or cut short, has taken it back to the outbox)."""
        records = []
        for p in self.failed.glob("*.reason.json"):
            f = p.with_name(p.name.removesuffix(".reason.json"))
            if not (f.exists() or f.is_symlink()):
                continue
            with contextlib.suppress(OSError, ValueError):
                records.append(json.loads(p.read_text()))
        return sorted(records, key=lambda r: str(r.get("at", "")), reverse=True)

    @property
    def left_on_server_path(self) -> Path:
        return self.paths.root / "left-on-server.json"

    def note_left_on_server(self, entries: dict[str, int]) -> None:
        """Given the remote responses the poller leaves on the server ("FOLDER/name" → size), record them for
        `status` (rewritten only when the list changes)."""
        doc = [{"file": k, "size": v, "why": "larger than poll.max_size"} for k, v in sorted(entries.items())]
        if doc != self.left_on_server():  # derived for display: no fsync
            atomic_write(self.left_on_server_path, json.dumps(doc, indent=2).encode(), sync=False)

    def left_on_server(self) -> list[dict[str, Any]]:
        """The responses the poller left on the server at its last poll, with why."""
        try:
            doc = json.loads(self.left_on_server_path.read_text())
        except (OSError, ValueError):
            return []
        return doc if isinstance(doc, list) else []

    def archive(self, sets: dict[str, list[Path]], day: dt.date | None = None) -> Path:
        """Given sent sets (GO name → local files), move each set's files with an empty GO into
        sent/YYYY-MM-DD/; fsync every folder touched once; return that folder.

        The GOs of one call are names of one empty file (hard links to the first this call created): one inode
        per batch, not per set (creating a file is most of its cost on ext4); each is created on its own where
        links fail (no hard links on that filesystem, too many to one file)."""
        dest = self.sent / (day or dt.date.today()).isoformat()
        dest.mkdir(parents=True, exist_ok=True)
        sources = set()
        empty: Path | None = None  # a GO this call created, empty: the others are linked to it
        for go_name, files in sets.items():
            for f in files:
                with contextlib.suppress(FileNotFoundError):  # moved before a crash, or a set without FS
                    move_durably(f, dest, sync=False)
                    sources.add(f.parent)
            with contextlib.suppress(FileExistsError):  # archived before a crash
                empty = _empty_go(dest / go_name, empty)
        fsync_dir(dest)
        for d in sources:
            fsync_dir(d)
        return dest


def _empty_go(go: Path, empty: Path | None) -> Path:
    """Given a GO's path in sent/ and an empty GO made by the same archive call (or None), make the GO there as
    a link to that one, or as a file of its own where that fails; return the empty GO to link the next to.
    Raise FileExistsError if the GO is there already."""
    if empty is not None:
        try:
            os.link(empty, go)
            return empty
        except FileExistsError:
            raise
        except OSError:  # EMLINK, EPERM (no hard links on some shares), the first GO gone: a file of its own
            pass
    go.open("xb").close()  # empty: nothing to fsync but its folder entry
    return go


def _changed_after_sent(name: str) -> tuple[str, str]:
    return (
        "changed after it was sent",
        f"{name} changed after its copy was signed and sent: the ONSS got an earlier version, not this one",
    )


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def same_as_signed(row: SetRow, path: Path, st: os.stat_result) -> bool:
    """Given a claimed set, one of its outbox FIs and its stat now, return whether it still holds the bytes
    recorded at the claim: size, mtime, inode and ctime unchanged, or (when only the inode or ctime differ: a
    chmod, a hard link made by a backup tool, an extended attribute; or for a set claimed before inodes and
    ctimes were recorded) the same digest as the copy signed."""
    name = path.name
    if row.data.unchanged(name, st) and name in row.data.identities:
        return True
    if st.st_size != row.data.sizes.get(name) or st.st_mtime_ns != row.data.mtimes.get(name, st.st_mtime_ns):
        return False
    digest = row.data.digests.get(name)
    if digest is None:  # signed before digests were recorded: what the stat says is all there is
        return row.data.unchanged(name, st)
    return file_digest(path, digest.partition(":")[0]) == digest


def file_digest(path: Path, algorithm: str) -> str:
    """Given a file and a hash algorithm, return "algorithm:hex" of its bytes (as the signer records it)."""
    with path.open("rb") as f:
        return f"{algorithm}:{hashlib.file_digest(f, algorithm).hexdigest()}"


def _in_flight(journal: Journal, name: str) -> bool:
    """Whether a file name belongs to a set claimed and not failed (a name outside the grammar never does)."""
    try:
        row = journal.get_set(set_key(parse_name(name)))
    except InvalidName:
        return False
    return row is not None and row.state != State.FAILED


class SpoolBusy(RelayError):
    """Another relay process holds this spool."""


class SpoolLock:
    """Given a spool root, take or wait for its lock; the kernel releases it when the holder dies. The RelayLock
    of one machine (leadership.py): no epoch, never lost while the process lives."""

    epoch: int | None = None

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "relay.lock"
        self._fd: int | None = None
        self.standby_since: float | None = None  # time.time() of the first try that found it held

    def lost(self) -> str | None:
        """Return None: a flock is held until this process gives it back or dies."""
        return None

    def check(self) -> None:
        """Return: a flock held cannot have been taken over."""

    def describe(self) -> dict[str, object]:
        """Return the lock's line for status and check: the SQLite journal, this spool's flock."""
        leader = self._fd is not None
        return {
            "backend": "sqlite",
            "lock": str(self.path),
            "leader": leader,
            "epoch": None,
            "standby_since": None if leader else self.standby_since,
        }

    def try_acquire(self) -> bool:
        """Take the flock without waiting; return whether this process holds it now."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.standby_since = self.standby_since or time.time()
            return False
        self._fd, self.standby_since = fd, None
        try:  # who holds it, for the messages of others; the lock itself is the flock
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: the relay starts all the same and its stages say what is wrong
            pass
        return True

    @property
    def unreachable(self) -> str | None:
        """A file lock is always there to be asked: None."""
        return None

    def holder(self) -> str:
        """Return the pid written by the holder, "?" when unreadable."""
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def acquire_or_refuse(self, what: str, advice: str = "it does this itself; stop it first or let it work") -> None:
        """Given what wants the spool and what to do instead, take the lock or raise SpoolBusy saying who holds it."""
        if not self.try_acquire():
            raise SpoolBusy(
                f"{what} refused: a relay (pid {self.holder()}) is running on this spool ({self.path.parent}); {advice}"
            )

    def release(self) -> None:
        """Give the flock back and close its file."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def spool_in_use(root: Path) -> bool:
    """Given a spool root, return whether a relay holds its lock now (tried with a shared lock, released at once;
    never created nor written)."""
    try:
        fd = os.open(root / "relay.lock", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


def spool_holder(root: Path) -> str | None:
    """Given a spool root, return the pid written in its lock file when a relay holds that lock now, else None."""
    if not spool_in_use(root):
        return None
    try:
        return (root / "relay.lock").read_text().strip() or "?"
    except OSError:
        return "?"


def quarantine_result_name(file_name: str) -> str:
    """Given a quarantined outbox file's name, return the name of its result in the results folder."""
    return f"{file_name}.quarantined.json"
