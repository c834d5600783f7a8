"""Claims a journal commit refused (a full disk, a read-only or busy journal): until they are recorded, or gone
from the outbox, a scan that records nothing fails again with the same error. The relay's own read of a file
makes it look busy for a moment (inotify does not say who opened it); without this, that scan looked like a
recovery, and a full disk was a stage_retry/stage_recovered pair many times a second."""

from __future__ import annotations

from collections.abc import Container


class UnrecordedClaims:
    """Given nothing, remember the outbox names of the last claims the journal refused and the error it gave."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.error: Exception | None = None

    def refused(self, names: set[str], error: Exception) -> None:
        """Given the names of a batch the journal refused and its error, keep them until recorded or gone."""
        self.names, self.error = set(names), error

    def after_scan(self, present: Container[str], recorded: bool) -> None:
        """Given the outbox names a scan saw and whether it recorded claims, forget the refusal when it recorded
        or its files left the outbox; otherwise raise its error again: the failure has not ended."""
        if recorded or not any(name in present for name in self.names):
            self.names, self.error = set(), None
            return
        if self.error is not None:
            raise self.error.with_traceback(None)  # the same error again, not a traceback growing at each scan
