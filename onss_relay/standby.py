"""A relay that is not the active one: it waits as a standby, saying so, until the relay lock is free; and a
relay that takes over from another one waits before touching sets that one left mid-upload.

The lock is the spool's flock on one machine, the lease in the PostgreSQL journal on two (leadership.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from onss_relay.config import MetricsConfig
from onss_relay.health import Health, daemon_report, write_report
from onss_relay.journal import Journal, State
from onss_relay.leadership import RelayLock
from onss_relay.sd_notify import Notifier

log = structlog.get_logger(__name__)


def wait_for_leadership(
    lock: RelayLock,
    stop: threading.Event,
    notifier: Notifier,
    tick: Callable[[], None],
    metrics: MetricsConfig | None = None,
) -> bool:
    """Given the relay lock, take it, waiting as a standby (logged once as "standby", told to systemd as READY
    and STATUS=standby, serving /metrics and /healthz on metrics.listen meanwhile) while another relay holds it;
    return True once held, False if stopped first."""
    if lock.try_acquire():
        return True
    if metrics is None or not metrics.listen:
        return _wait_as_standby(lock, stop, notifier, tick)
    from onss_relay.standby_web import serve_standby, stop_serving  # prometheus_client only when it serves

    web = serve_standby(metrics, lock)
    try:
        return _wait_as_standby(lock, stop, notifier, tick)
    finally:
        stop_serving(web)  # the active relay's listener takes the address next


def _wait_as_standby(lock: RelayLock, stop: threading.Event, notifier: Notifier, tick: Callable[[], None]) -> bool:
    """Given the relay lock another relay holds, say "standby" and try it every second; return True once held,
    False if stopped first."""
    if unreachable := lock.unreachable:  # the database, not another relay, is what it waits for
        detail = f"waiting for the journal's database ({unreachable}); taking the leadership when it answers"
    else:
        detail = f"active relay: {lock.holder()}; taking over when it stops"
    log.warning("standby", detail=detail, **_where(lock))
    # READY: under Type=notify a standby that never says so is timed out and restarted in a loop
    notifier.send("READY=1", f"STATUS=standby: {detail}")
    while not stop.wait(1.0):
        if lock.try_acquire():
            log.info("taking_over", epoch=lock.epoch, **_where(lock))
            return True
        tick()
    return False


LEADER_FRESH = 5.0  # seconds: a leader's report younger than this is its own word, never written over


def report_waiting(root: Path, lock: RelayLock) -> None:
    """Given the spool root and the relay lock of a relay waiting as a standby, say in health.json that it waits
    for the journal's database while that cannot be reached (every relay then waits: `status --health` must not
    say "not running"); nothing while the database answers or a live leader reports there."""
    if (why := lock.unreachable) is None:
        return
    if (report := daemon_report(root)) is not None:
        doc, age = report
        if (doc.get("leadership") or {}).get("leader") and not doc.get("stopped") and age < LEADER_FRESH:
            return
    with contextlib.suppress(OSError):
        write_report(root, Health(False, f"waiting for the journal's database ({why})"), [], lock.describe())


def _where(lock: RelayLock) -> dict[str, object]:
    doc = lock.describe()
    return {k: doc[k] for k in ("backend", "lock", "journal") if k in doc}


def wait_before_recovery(lock: RelayLock, journal: Journal, lease: float, stop: threading.Event) -> bool:
    """Given the lock just taken (PostgreSQL), the journal and the lease, wait one lease before any stage runs
    when sets are left in uploading or go_sending: an old leader paused right after its last check before a
    GO (SIGSTOP, a frozen VM) has that long to finish or find its lease lapsed; then the usual recovery reads
    the server (GO present, set consumed, ACRF in OUT). Return False if stopped or the lock lost meanwhile."""
    if lock.epoch is None:
        return True
    left = [r.go_name for r in journal.sets_in(State.UPLOADING, State.GO_SENDING)]
    if not left:
        return True
    log.warning("takeover_wait", sets=len(left), wait_s=lease, detail="sets the previous leader left mid-upload")
    deadline = threading.Event()
    timer = threading.Timer(lease, deadline.set)
    timer.start()
    try:
        while not deadline.wait(0.5):
            if stop.is_set() or lock.lost() is not None:
                return False
    finally:
        timer.cancel()
    return True
