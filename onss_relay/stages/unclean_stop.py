"""The spool's marker of upload connections that may carry requests (``uploads-in-flight``), and what a
process does when it finds one left by the last: an unclean stop (SIGKILL, OOM, power loss) gave up connections
whose requests a stalled path can still deliver, so every set in uploading or go_sending becomes uncertain.

Only connections that can deliver late (SFTP, FTP; never a local folder) write the marker. A clean end of a
round (every connection closed, kept idle with nothing unanswered, or aborted with its sets recorded
uncertain) removes it; a clean stop (SIGTERM, the end of ``send --once``) leaves none.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import structlog

from onss_relay.durable import fsync_dir
from onss_relay.journal import Journal
from onss_relay.stages.uncertain import UNCERTAIN_STATES, mark_uncertain

log = structlog.get_logger(__name__)

MARKER_NAME = "uploads-in-flight"
UNCLEAN_STOP = "the relay stopped uncleanly (killed, out of memory, power lost) while its requests could be in flight"


class InFlightMarker:
    """Given a spool root, the marker file saying that upload connections may carry requests not yet answered."""

    def __init__(self, root: Path) -> None:
        self.path = root / MARKER_NAME
        self._lock = threading.Lock()
        self._set = False

    def present(self) -> bool:
        """Whether the marker is there (left by the last process, or set by this one)."""
        return self.path.exists()

    def set(self) -> None:
        """Make the marker durable (its name fsynced in the spool root) before a request goes out; once per round."""
        with self._lock:
            if self._set:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, f"pid {os.getpid()} since {time.time():.3f}\n".encode())
            finally:
                os.close(fd)
            fsync_dir(self.path.parent)
            self._set = True

    def clear(self) -> None:
        """Remove the marker: nothing sent on any connection is unanswered and unrecorded. (Not fsynced: should a
        power cut bring it back, the next start only waits a quiet period it did not need.)"""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._set = False


def after_unclean_stop(journal: Journal, marker: InFlightMarker, quiet: float) -> list[str]:
    """Given the journal, the spool's marker and the quiet period, at the start of a process that uploads: if the
    last process left the marker, record every set in uploading or go_sending uncertain from now (step: its
    state) and remove the marker; return the sets recorded."""
    if not marker.present():
        return []
    steps = {row.go_name: str(row.state) for row in journal.sets_in(*UNCERTAIN_STATES)}
    log.warning("unclean_stop_found", marker=str(marker.path), sets=len(steps), detail=UNCLEAN_STOP)
    mark_uncertain(journal, steps, quiet, why=UNCLEAN_STOP)
    marker.clear()
    return sorted(steps)
