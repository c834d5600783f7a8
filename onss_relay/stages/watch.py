"""Outbox watching: watchdog observers (inotify, or polling on network shares) whose events wake the claim scan.

Events are hints only: the scan in ``claim.py`` decides. Filesystem detection picks the observer.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import structlog
from watchdog.events import (
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver

from onss_relay.stages.claim import Claimer
from onss_relay.stages.settle import SettleTracker

log = structlog.get_logger(__name__)

MOVE_PAIRING = 0.05  # seconds watchdog holds a rename's first half to pair it with its second (its default: 0.5)
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "overlay", "virtiofs", "vboxsf", "afs")


def filesystem_type(path: Path, mounts: str | None = None) -> str:
    """Given a path, return the type of the filesystem holding it, from /proc/mounts (longest mount point)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    target = str(path.resolve())
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def wants_polling(setting: str, path: Path, mounts: str | None = None) -> bool:
    """Given watch.polling (auto/true/false) and the outbox, say whether to poll instead of using inotify."""
    if setting != "auto":
        return setting == "true"
    kind = filesystem_type(path, mounts)
    return kind.startswith(NETWORK_FILESYSTEMS)


def shorten_move_pairing() -> None:
    """Hold a rename's IN_MOVED_FROM only MOVE_PAIRING seconds waiting for its IN_MOVED_TO, not watchdog's 0.5 s.

    watchdog queues every event behind such a held half: each original the relay moves out of the outbox (to
    held/, sent/, failed/) has no second half here and held the next declaration's events for half a second. The
    kernel queues both halves of a rename together, so they still pair; one that did not would only be counted
    a new file (settled after EVENT_FALLBACK), never trusted wrongly.
    """
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # watchdog before 6: the same delay on its InotifyBuffer
        from watchdog.observers.inotify_buffer import InotifyBuffer  # type: ignore[import-not-found,unused-ignore]

        InotifyBuffer.delay = MOVE_PAIRING
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING


class Watcher:
    """Given the outbox and a wake event, run a watchdog observer whose events wake the scanner early.

    Events are only hints: the scan decides. Close-after-write and renames into the outbox make a file
    trusted (for settle = 0); any later write takes that trust back.
    """

    def __init__(self, outbox: Claimer, polling: str, wake: threading.Event) -> None:
        self.outbox = outbox
        self.wake = wake
        self.polling = wants_polling(polling, outbox.spool.outbox)
        self._observer: BaseObserver | None = None
        self._alarm: _OverflowAlarm | None = None

    def start(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        if not self.polling:
            shorten_move_pairing()
        handler = _Hints(self.outbox.tracker, self.outbox.spool.outbox, self.wake)
        observer: BaseObserver = PollingObserver(timeout=1) if self.polling else Observer()
        observer.schedule(handler, str(self.outbox.spool.outbox), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        if self._alarm is None:
            self._alarm = _OverflowAlarm(self.wake, self.outbox.tracker)
            logging.getLogger("watchdog.observers.inotify_c").addHandler(self._alarm)
        self.outbox.tracker.events = not self.polling
        if not self.polling:  # a writer may have opened these before the watch began: no open event will tell
            with os.scandir(self.outbox.spool.outbox) as entries:
                self.outbox.tracker.unknown({e.name for e in entries if e.is_file(follow_symlinks=False)})
        log.info(
            "watching",
            outbox=str(self.outbox.spool.outbox),
            observer="polling" if self.polling else "inotify",
            filesystem=filesystem_type(self.outbox.spool.outbox),
        )

    def keep_alive(self) -> bool:
        """Given a running watch, start it again if one of watchdog's threads died (an exception inside watchdog
        ends its thread and events stop without a word: seen with a stepped clock). The tracker stops trusting
        events until the new watch runs, and the scan looks at every file. True when it was started again."""
        observer = self._observer
        if observer is None or (observer.is_alive() and all(e.is_alive() for e in observer.emitters)):
            return False
        log.warning(
            "watch_restarted",
            detail="the outbox's event thread stopped; scanning the whole outbox and watching it again",
        )
        self.outbox.tracker.events_lost()
        self._stop_observer()
        self.start()
        self.wake.set()
        return True

    def stop(self) -> None:
        if self._alarm is not None:
            logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._alarm)
            self._alarm = None
        self._stop_observer()
        self.outbox.tracker.events = False

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


class _OverflowAlarm(logging.Handler):
    """watchdog recovers from an inotify queue overflow but only logs it: hear that, and rescan at once."""

    def __init__(self, wake: threading.Event, tracker: SettleTracker) -> None:
        super().__init__(logging.WARNING)
        self.wake = wake
        self.tracker = tracker

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            log.warning("event_queue_overflow", detail="events were lost; scanning the whole outbox now")
            self.tracker.events_lost()
            self.wake.set()


class _Hints(FileSystemEventHandler):
    def __init__(self, tracker: SettleTracker, outbox: Path, wake: threading.Event) -> None:
        self.tracker = tracker
        self.outbox = str(outbox)
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self.wake.set()
            return
        name = os.path.basename(str(event.src_path))
        if isinstance(event, FileOpenedEvent):
            self.tracker.opened(name)  # a reader or a writer: which, inotify does not say; its close will
            return
        if isinstance(event, FileClosedNoWriteEvent | FileClosedEvent):
            if not self.tracker.closed_after(name, wrote=not isinstance(event, FileClosedNoWriteEvent)):
                return  # a read no scan waited for (most often the relay's own): it settles nothing, wakes none
        elif isinstance(event, FileMovedEvent):
            self.tracker.gone(name)
            if os.path.dirname(str(event.dest_path)) == self.outbox:
                self.tracker.gone(os.path.basename(str(event.dest_path)))
                self.tracker.trust(os.path.basename(str(event.dest_path)))
        elif isinstance(event, FileDeletedEvent):
            self.tracker.gone(name)
        elif isinstance(event, FileModifiedEvent):
            self.tracker.modified(name)
        elif isinstance(event, FileCreatedEvent):
            self.tracker.distrust(name)
        self.wake.set()
