"""A stage thread: run one step at its interval until stopped, count its failures, back off after a
transient one, pause after a permanent one, and say when it recovers. The daemon runs four (watch, sign,
upload, poll) and reads their health.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

import structlog

from onss_relay.errors import (
    CertificateError,
    ConfigError,
    JournalError,
    LocalError,
    PermanentRemoteError,
    RemoteError,
)

log = structlog.get_logger(__name__)

RETRY_AFTER_TRANSIENT = 2.0  # first retry after a transient error; doubled each time, up to the stage's interval
UNHEALTHY_AFTER = 3  # consecutive failed attempts of a stage that make the relay unhealthy (an outage)


@dataclasses.dataclass
class StageHealth:
    name: str
    last_ok: float | None = None
    last_error: str | None = None
    paused_until: float = 0.0  # time.monotonic(): a wall-clock jump (NTP step, VM resume) moves no pause
    failures: int = 0  # every failed attempt since start (the metrics' counter)
    consecutive: int = 0  # failed attempts since the last success
    failing_since: float | None = None
    next_try_at: float | None = None  # time.time() of the next attempt while failing (for `status`)


class Stage(threading.Thread):
    """Given a name, a step function, an interval and the daemon's stop event, run the step until stopped.

    A permanent error (authentication, host key, certificate) pauses the stage and is reported; a transient
    one is retried soon. Other stages go on either way.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        interval: Callable[[], float],
        stop: threading.Event,
        wake: threading.Event | None = None,
        permanent_retry: float = 300.0,
        backoff_cap: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name=f"stage-{name}", daemon=True)
        self.permanent_retry = permanent_retry
        self.step = step
        self.interval = interval
        self.backoff_cap = backoff_cap or interval  # the longest wait between failed attempts
        self.stop = stop
        self.wake = wake or threading.Event()
        self._retry = threading.Event()
        self.health = StageHealth(name)

    def run(self) -> None:
        while not self.stop.is_set():
            self.run_once()
            delay = self.next_in()
            self.health.next_try_at = time.time() + delay if self.health.consecutive else None
            self._wait(delay)

    def _wait(self, delay: float) -> None:
        """Given the seconds to the next attempt, wait them out or until woken. A failing stage is woken only by
        the stop or retry_now (room on the disk again), not by the hints that wake a healthy one: the watch
        stage's own reads of a refused file would otherwise have it try again many times a second."""
        end = time.monotonic() + delay
        while True:
            woken = self.wake.wait(max(0.0, end - time.monotonic()))
            self.wake.clear()
            if not woken or not self.health.consecutive or self.stop.is_set() or self._retry.is_set():
                self._retry.clear()
                return

    def retry_now(self) -> None:
        """What a failing stage waited for came back (room on the disk): try again now, not after the backoff."""
        self._retry.set()
        self.wake.set()

    def next_in(self) -> float:
        """Seconds to the next attempt: the interval; the end of a pause (a permanent error); or sooner after a
        transient failure (2, 4, 8 … s, up to the backoff cap), so that an outage shows within a minute and its end
        as soon. A failing stage never tries sooner than its backoff: the watch stage's interval is short when a
        file's settle time has passed, and a full disk would otherwise have it retry many times a second."""
        h = self.health
        now = time.monotonic()
        if h.paused_until > now + RETRY_AFTER_TRANSIENT:
            return h.paused_until - now
        if h.consecutive:
            return min(self.backoff_cap(), RETRY_AFTER_TRANSIENT * 2.0 ** min(h.consecutive - 1, 10))
        return self.interval()

    def run_once(self) -> None:
        h = self.health
        if h.paused_until > time.monotonic():
            return
        try:
            self.step()
        except (PermanentRemoteError, CertificateError, ConfigError) as e:
            self._failed(str(e), self.permanent_retry)
            log.error("stage_paused", stage=h.name, error=str(e), retry_in_s=self.permanent_retry)
        except (RemoteError, LocalError, OSError, JournalError) as e:  # network, full disk, journal busy
            self._failed(str(e), 0.0)
            log.warning("stage_retry", stage=h.name, error=str(e), attempt=h.consecutive, retry_in_s=self.next_in())
        except Exception as e:  # a bug: report it, keep the others going, try again later
            self._failed(repr(e), 30.0)
            log.exception("stage_crashed", stage=h.name, error=repr(e))
        else:
            self.note_progress()
            h.last_ok = time.time()

    def note_failure(self, error: str, retry_in: float | None = None) -> None:
        """Given a failed attempt made inside the step (the uploader retries within its round) and the seconds to
        its next try, count it and keep that next try for `status`."""
        self._failed(error, 0.0)
        if retry_in is not None:
            self.health.next_try_at = time.time() + retry_in

    def note_progress(self) -> None:
        """A success, in the step or inside it: the failures in a row end, and the recovery is said."""
        h = self.health
        if h.consecutive:
            log.info(
                "stage_recovered",
                stage=h.name,
                after_attempts=h.consecutive,
                failing_for_s=round(time.time() - (h.failing_since or time.time())),
            )
        h.consecutive, h.failing_since, h.last_error = 0, None, None

    def _failed(self, error: str, pause: float) -> None:
        h = self.health
        h.failures += 1
        h.consecutive += 1
        h.failing_since = h.failing_since or time.time()
        h.last_error, h.paused_until = error, time.monotonic() + pause
