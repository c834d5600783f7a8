"""One active relay: the lock every running relay takes first, behind one interface. On one machine it is the
spool's ``flock`` (spool.py SpoolLock); with a PostgreSQL journal it is a lease row in that database
(journal/postgres_lease.py), which a standby on another machine can see expire and take over, and whose
epoch fences every journal write of a relay that lost it."""

from __future__ import annotations

import threading
from typing import Protocol

from onss_relay.config import Config


class RelayLock(Protocol):
    """The right to run the stages of a spool (one sender): taken, watched, given back."""

    @property
    def epoch(self) -> int | None:
        """The leadership epoch held now (PostgreSQL: raised at every take-over), None for a flock."""
        ...

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; return whether this process holds it now."""
        ...

    def holder(self) -> str:
        """Return who holds the lock, for the messages of a standby ("?" when unknown)."""
        ...

    @property
    def unreachable(self) -> str | None:
        """Why the lock's keeper cannot be asked while it cannot (PostgreSQL: its database is down; a standby
        then waits for it, not for another relay), None otherwise (always for a flock)."""
        ...

    def lost(self) -> str | None:
        """Return why a lock this process held is no longer safely held (its lease lapsed or its connection
        broke), None while it still is: the stages must stop at once."""
        ...

    def check(self) -> None:
        """Raise Fenced unless the lock is safely held now (called right before every GO)."""
        ...

    def release(self) -> None:
        """Give the lock back (a standby may take it at once)."""
        ...

    def describe(self) -> dict[str, object]:
        """Return what status, check and /metrics show: backend, leader, epoch, since, standby_since."""
        ...


def relay_lock_for(cfg: Config) -> RelayLock:
    """Given the configuration, return its relay lock: the spool's flock with a SQLite journal, the lease in the
    journal's database with PostgreSQL."""
    if cfg.journal.url:
        from onss_relay.journal.postgres_lease import PostgresLease

        return PostgresLease(cfg.journal, cfg.sender.number)
    from onss_relay.spool import SpoolLock

    return SpoolLock(cfg.paths.root)


class TermStop(threading.Event):
    """Given the relay lock, the stop event of one term of leadership: set by a stop request, and set the moment
    the lock is no longer safely held, so that every stage's ``is_set()`` check (before each file step, batch,
    and between items of a long loop) is a leadership check: a relay that lost its lease moves no more files."""

    def __init__(self, lock: RelayLock) -> None:
        super().__init__()
        self._relay_lock = lock

    def is_set(self) -> bool:
        """Return whether the term must stop: asked to, or the lock lost (then the event is set for waiters)."""
        if super().is_set():
            return True
        if self._relay_lock.lost() is not None:
            self.set()
            return True
        return False
