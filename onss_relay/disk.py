"""The spool's storage seen from the outside: a full disk (statvfs), one warning when it fills and one line when
there is room again, never one per second; a SQLite journal this process cannot write (read-only mount, wrong
owner)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

log = structlog.get_logger()

FULL_BELOW = 256 * 1024  # bytes free under which the spool's filesystem counts as full (SQLite needs pages)


def disk_full(path: Path) -> str | None:
    """Given a folder, return a sentence saying its filesystem is full (less than FULL_BELOW bytes free for this
    user), or None when there is room or it cannot be told."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= FULL_BELOW:
        return None
    return f"disk full: {free} bytes free on the filesystem of {path}; free space there, the relay goes on by itself"


class DiskWatch:
    """Given a folder, tell whether its disk is full, logging `disk_full` once when it fills and
    `disk_space_back` once when there is room again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.since: float | None = None

    def check(self) -> str | None:
        """Return the disk-full sentence, or None; log only the changes."""
        why = disk_full(self.path)
        if why and self.since is None:
            self.since = time.time()
            log.warning("disk_full", error=why)
        elif why is None and self.since is not None:
            log.info("disk_space_back", path=str(self.path), full_for_s=round(time.time() - self.since))
            self.since = None
        return why


def journal_unwritable(path: Path) -> str | None:
    """Given the journal's path, return why this process cannot write it (a read-only mount, a journal restored
    by `cp` as root, a folder it cannot create -wal in), or None when it can."""
    for target, what in ((path, "the journal"), (path.parent, "the journal's folder (its -wal and -shm)")):
        if target.exists() and not os.access(target, os.W_OK):
            why = "on a read-only filesystem" if _read_only_mount(target) else "not writable by this user"
            return (
                f"{what} {target} is {why}: claims and results cannot be recorded (onss-relay restore sets the owner)"
            )
    return None


def _read_only_mount(path: Path) -> bool:
    """Given a path, return whether the filesystem holding it is mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
