"""One active relay per spool: an exclusive fcntl lock on <root>/relay.lock, held for the process's life."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from onss_relay.errors import RelayError


class SpoolBusy(RelayError):
    """Another relay process holds this spool."""


class SpoolLock:
    """Given a spool root, take or wait for its lock; the kernel releases it when the holder dies."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "relay.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def acquire_or_refuse(self, what: str) -> None:
        if not self.try_acquire():
            raise SpoolBusy(f"{what} refused: a relay (pid {self.holder()}) is running on this spool "
                            f"({self.path.parent}) and does this itself; stop it first or let it work")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
