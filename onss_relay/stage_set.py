"""The daemon's stage threads over one relay: the watcher wakes the claim scan, which wakes signing, which wakes
uploading; polling and retention run on their intervals. Intervals are read from the configuration in force at
each wait (a SIGHUP may change them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.retention import Pruner
from onss_relay.stage_thread import Stage

log = structlog.get_logger(__name__)

SCAN_SHARE = 0.5  # while events keep coming, claim scans take at most this share of the time (see paced)
SCAN_REST_MAX = 1.0  # seconds: the longest rest between two scans that pacing imposes


def relay_stages(
    cfg: Callable[[], Config], relay: Relay, stop: threading.Event, outbox_wake: threading.Event
) -> tuple[list[Stage], Pruner]:
    """Given the configuration in force (a function), the relay, the term's stop event and the event the outbox
    watcher sets, return the stage threads (not started) and the retention pruner they run."""
    signer_wake, uploader_wake = threading.Event(), threading.Event()
    pruner = Pruner(cfg().retention, relay.journal, relay.spool, stop)

    @paced(stop)
    def scan() -> None:
        relay.uploader.freshen()  # sets may come: prove the idle connection while they are claimed and signed
        claimed = relay.claimer.scan(on_page=signer_wake.set)  # signing starts after the first page claimed
        log.debug("outbox_scanned", claimed=len(claimed))

    def sign() -> None:
        if relay.signer.sign_queued(progress=uploader_wake.set):
            uploader_wake.set()

    def upload() -> None:
        report = relay.uploader.upload_pending()
        relay.uploader.keep_warm()  # the connection stays, proven alive, for the sets coming
        if report.error:
            raise report.error

    retry = cfg().remote.permanent_retry
    uploading = Stage("upload", upload, lambda: 5.0, stop, uploader_wake, retry)
    relay.uploader.on_retry, relay.uploader.on_progress = uploading.note_failure, uploading.note_progress
    watching = Stage(
        "watch",
        scan,
        lambda: next_scan_in(relay, float(cfg().watch.rescan)),
        stop,
        outbox_wake,
        retry,
        backoff_cap=lambda: float(cfg().watch.rescan),  # a past settle deadline is no reason to spin
    )
    return [
        watching,
        Stage("sign", sign, lambda: 5.0, stop, signer_wake, retry),
        uploading,
        Stage("poll", relay.poll_once, lambda: cfg().poll.interval, stop, None, retry),
        Stage("retention", pruner.run_once, lambda: cfg().retention.interval, stop, None, retry),
    ], pruner


def next_scan_in(relay: Relay, rescan: float) -> float:
    """Given the relay and watch.rescan, return the seconds until the next claim scan: the next settle deadline
    of a file seen, or the rescan interval."""
    deadline = relay.claimer.tracker.next_deadline()
    if deadline is None:
        return rescan
    return max(0.05, min(rescan, deadline - time.monotonic() + 0.01))


def paced(stop: threading.Event) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Given the stop event, return a decorator that makes a scan rest, before it runs, as long as the last
    scan took (SCAN_SHARE), at most SCAN_REST_MAX: files written one after another each wake the scan, and each
    scan reads the whole outbox (claimed sets stay there until sent), so unpaced scans took the one core the
    signer and uploader share with them (300 files 20 ms apart: 389 scans, GO p50 10 s). Paced, a backlog is
    claimed in pages by fewer scans; an idle outbox's first file is claimed at once."""

    def decorate(scan: Callable[[], None]) -> Callable[[], None]:
        last = {"ended": 0.0, "took": 0.0}

        def run() -> None:
            rest = last["took"] * (1 / SCAN_SHARE - 1) - (time.monotonic() - last["ended"])
            if rest > 0:
                stop.wait(min(rest, SCAN_REST_MAX))
            began = time.monotonic()
            try:
                scan()
            finally:
                last["ended"] = time.monotonic()
                last["took"] = last["ended"] - began

        return run

    return decorate
