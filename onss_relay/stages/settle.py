"""When an outbox file is settled: unchanged for watch.settle on a monotonic clock, closed as inotify tells it
(opens, writes and closes by any user), and how long the relay has seen it (for watch.incomplete_after).

Fed by the claim scan (stat) and by the watcher's events (``watch.py``); it decides nothing else.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Container
from typing import Protocol


class Stat(Protocol):
    """What the tracker compares of a file: an os.stat_result, or the outbox index's record of one."""

    @property
    def st_size(self) -> int: ...

    @property
    def st_mtime_ns(self) -> int: ...


@dataclasses.dataclass(slots=True)
class _Sighting:
    size: int
    mtime_ns: int
    since: float  # monotonic time this (size, mtime) was first seen


class SettleTracker:
    """Given a settle delay, tell when a file kept its size and mtime that long (monotonic clock).

    With ``settle = 0`` and filesystem events available, a file is settled once a close-after-write or a
    rename into the outbox was seen for it (``trust``), or once it kept its size and mtime for
    ``EVENT_FALLBACK`` seconds in case an event was lost. Without events (``send --once``), 0 trusts what
    is there.

    Whatever the delay, while events flow a file is not settled as long as the kernel says it is open
    (opened and not closed since) or modified and not closed since: inotify tells this for writers of
    every user, which /proc does not (another user's processes, ``ProtectProc=invisible``).
    """

    EVENT_FALLBACK = 5.0

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self.events = False  # True while an observer delivers close/rename events
        self._seen: dict[str, _Sighting] = {}
        self._first: dict[str, float] = {}  # monotonic time each name was first seen by this process
        self._trusted: set[str] = set()
        self._opens: dict[str, int] = {}  # name → opens not closed yet, as inotify told them
        self._dirty: set[str] = set()  # modified and not closed since
        self._unknown: dict[str, float] = {}  # name → since when its open state is unknown (no open was seen)
        self._waited: set[str] = set()  # names a settle check found open: their last close may make them settled
        self.settle_unknown = 0.0  # how long such a file must stay quiet (watch.settle_unknown)
        self._lock = threading.Lock()

    def trust(self, name: str) -> None:
        with self._lock:
            self._trusted.add(name)

    def closed(self, name: str) -> bool:
        """Whether a close-after-write or a rename into the outbox was seen for it since it last changed."""
        with self._lock:
            return name in self._trusted

    def distrust(self, name: str) -> None:
        with self._lock:
            self._trusted.discard(name)

    def opened(self, name: str) -> None:
        """Given a name inotify saw opened (by any process, any user), count it open until its close."""
        with self._lock:
            self._opens[name] = self._opens.get(name, 0) + 1

    def modified(self, name: str) -> None:
        """Given a name inotify saw written to, hold it unsettled until a close after writing."""
        with self._lock:
            self._dirty.add(name)
            self._trusted.discard(name)

    def closed_after(self, name: str, wrote: bool) -> bool:
        """Given a name inotify saw closed (after writing or not), count that open as ended; return whether that
        may settle a file: a close after writing, or the last close of a file a settle check found open. A read
        nobody waited for (the relay's own, while claiming, signing and uploading a set) settles nothing."""
        with self._lock:
            left = self._opens.get(name, 0) - 1
            if left > 0:
                self._opens[name] = left
            else:
                self._opens.pop(name, None)  # opened before the watch began: nothing counted to end
            if wrote:
                self._dirty.discard(name)
                self._trusted.add(name)
                self._unknown.pop(name, None)  # its writer was seen closing it
            if left > 0:
                return wrote
            waited = name in self._waited
            self._waited.discard(name)  # told now: a later read wakes nothing
            return wrote or waited

    def gone(self, name: str) -> None:
        """Given a name removed or renamed away, forget what events said of it."""
        with self._lock:
            self._opens.pop(name, None)
            self._dirty.discard(name)
            self._trusted.discard(name)
            self._unknown.pop(name, None)
            self._waited.discard(name)

    def unknown(self, names: set[str]) -> None:
        """Given names present when the watch began (a writer may have opened them before), count their open
        state unknown: settled only once seen closed after writing, or quiet for watch.settle_unknown."""
        now = self.clock()
        with self._lock:
            for name in names:
                self._unknown.setdefault(name, now)

    def events_lost(self) -> None:
        """After an event-queue overflow, opens and closes may be unmatched: start counting afresh, every file
        known so far with its open state unknown."""
        now = self.clock()
        with self._lock:
            for name in {*self._seen, *self._opens, *self._dirty}:
                self._unknown.setdefault(name, now)
            self._opens.clear()
            self._dirty.clear()
            self._trusted.clear()
            self._waited.clear()

    def busy(self, name: str, wait: bool = False) -> bool:
        """Whether events say a file is open, or modified and not closed since (False without events); with
        ``wait``, a file found open is remembered so that its last close tells the scan to look again."""
        if not self.events:
            return False
        with self._lock:
            busy = self._opens.get(name, 0) > 0 or name in self._dirty
            if busy and wait:
                self._waited.add(name)
            return busy

    def seen_for(self, name: str) -> float:
        """Given a name, return the seconds since this process first saw it (kept across rescans; mtimes are
        not used: `mv` keeps old ones). 0 for a name not seen yet."""
        first = self._first.get(name)
        return 0.0 if first is None else self.clock() - first

    def unchanged_for(self, name: str) -> float:
        """Given a name, return the seconds since its size or mtime last changed, as this process saw it."""
        prev = self._seen.get(name)
        return 0.0 if prev is None else self.clock() - prev.since

    def settled(self, name: str, st: Stat) -> bool:
        now = self.clock()
        self._first.setdefault(name, now)
        prev = self._seen.get(name)
        changed = prev is None or (prev.size, prev.mtime_ns) != (st.st_size, st.st_mtime_ns)
        if prev is None or changed:
            prev = self._seen[name] = _Sighting(st.st_size, st.st_mtime_ns, now)
        if self.busy(name, wait=True):
            return False
        if self.events and name in self._unknown:  # quiet since the watch began, not since an earlier sighting
            quiet_since = max(prev.since, self._unknown.get(name, now))
            return not changed and now - quiet_since >= max(self.settle, self.settle_unknown)
        if self.settle > 0:
            return not changed and now - prev.since >= self.settle
        if not self.events:
            return True
        with self._lock:
            trusted = name in self._trusted
        return trusted or now - prev.since >= self.EVENT_FALLBACK

    def next_deadline(self) -> float | None:
        """Return the monotonic time at which a file seen changing may next be settled, if any."""
        wait = self.settle if self.settle > 0 else (self.EVENT_FALLBACK if self.events else 0)
        with self._lock:
            pending = [s.since + wait for n, s in self._seen.items() if self.settle > 0 or n not in self._trusted]
            if self.events:
                unknown = max(self.settle, self.settle_unknown)
                pending += [
                    max(since, self._seen[n].since) + unknown for n, since in self._unknown.items() if n in self._seen
                ]
        return min(pending) if pending else None

    def sightings(self) -> dict[str, list[float]]:
        """Return what to keep across runs: name → [wall-clock seconds since first seen, since its size and mtime
        last changed, size, mtime_ns] (ages, so that a clock stepped between runs moves nothing backwards)."""
        now = self.clock()
        return {
            name: [round(now - self._first.get(name, s.since), 3), round(now - s.since, 3), s.size, s.mtime_ns]
            for name, s in sorted(self._seen.items())
        }

    def restore(self, saved: dict[str, list[float]], elapsed: float) -> None:
        """Given sightings kept by an earlier run and the wall-clock seconds since they were kept, count from
        those first sightings (a cron'd `send --once` reaches watch.incomplete_after across runs)."""
        now = self.clock()
        gap = max(elapsed, 0.0)
        for name, (first_age, since_age, size, mtime_ns) in saved.items():
            self._first.setdefault(name, now - first_age - gap)
            self._seen.setdefault(name, _Sighting(int(size), int(mtime_ns), now - since_age - gap))

    def forget(self, names: set[str]) -> None:
        with self._lock:
            for name in names:
                self._seen.pop(name, None)
                self._first.pop(name, None)
                self._trusted.discard(name)
                self._unknown.pop(name, None)
                self._waited.discard(name)

    def forget_missing(self, present: Container[str]) -> None:
        self.forget({n for n in self._seen if n not in present} | {n for n in self._first if n not in present})
