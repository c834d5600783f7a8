"""The values of the JSON texts read or written last, by text: a set's data is read by the refill, the taken
batch, each gate, the sent commit and its results file (~6 times on its way out), and parsing it again each
time was a tenth of the uploading process's CPU (issue 27). Only immutable values are kept (SetData, frozen)."""

from __future__ import annotations

import os
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class ParsedCache(Generic[T]):
    """Given how many to keep, the values of the last texts remembered, the oldest forgotten first; shared by
    the uploading threads."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._values: dict[str, T] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a forked child: a lock another thread of the parent held at the fork is held by no one here."""
        self._lock = threading.Lock()

    def get(self, text: str) -> T | None:
        """Given a text, return the value remembered for it, or None."""
        return self._values.get(text)

    def remember(self, text: str, value: T) -> None:
        """Given a text and its value (what parsing the text gives), keep it."""
        with self._lock:
            self._values[text] = value
            if len(self._values) > self.kept:
                del self._values[next(iter(self._values))]
