"""`onss-relay poll --once`: one poll that SIGTERM or SIGINT ends between two batches (what was taken is
committed, the next poll resumes), and its one-line summary."""

from __future__ import annotations

import signal
import threading

import structlog

from onss_relay.pipeline import Relay
from onss_relay.signals import act_on_signals
from onss_relay.stages.poll import PollReport

log = structlog.get_logger(__name__)


def poll_until_stopped(relay: Relay) -> PollReport:
    """Given a relay, poll once with SIGTERM and SIGINT setting its stop event; return the report."""
    stop_on_signals(relay.stop)
    return relay.poll_once()


def stop_on_signals(stop: threading.Event) -> None:
    """Given a stop event, make SIGTERM and SIGINT set it (a one-shot command ends at its next safe point)."""

    def on_stop(signum: signal.Signals) -> None:
        stop.set()
        log.info("stopping", signal=signum.name)

    act_on_signals({signal.SIGTERM: on_stop, signal.SIGINT: on_stop})  # in a thread, never in a handler


def summary(report: PollReport) -> str:
    """Given a poll's report, return the line `poll --once` prints."""
    n = report.counts
    return (
        f"mirrored {n['mirrored']} response file(s), deleted {n['deleted']} remotely"
        + (f", {n['suspicious']} suspicious name(s) left alone" if n["suspicious"] else "")
        + ("; stopped before the end (SIGTERM): the next poll resumes" if report.stopped else "")
    )
