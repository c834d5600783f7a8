"""Prometheus metrics: gauges read from the journal at scrape time, stage figures from the daemon's snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from onss_relay.config import PollConfig
from onss_relay.health import HealthSnapshot as HealthSnapshot  # health.py owns them; older importers
from onss_relay.health import StageFigures as StageFigures
from onss_relay.journal import IN_FLIGHT, Journal, State
from onss_relay.outcome import OUTCOMES
from onss_relay.spool import Spool
from onss_relay.waiting import overdue_counts


class RelayCollector(Collector):
    """Given the journal, a health snapshot source and a certificate-days source, describe the relay."""

    def __init__(
        self,
        journal: Journal,
        snapshot: Callable[[], HealthSnapshot],
        days_left: Callable[[], int],
        poll: Callable[[], PollConfig] = PollConfig,
        spool: Spool | None = None,
    ) -> None:
        self.journal = journal
        self.spool = spool
        self.poll = poll
        self.snapshot = snapshot
        self.days_left = days_left

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counts = self.journal.counts()
        depth = GaugeMetricFamily("onss_relay_queue_depth", "Declaration sets claimed but not yet sent")
        depth.add_metric([], sum(counts.get(s, 0) for s in IN_FLIGHT))
        yield depth
        oldest = self.journal.sets_in(*IN_FLIGHT, limit=1)
        age = GaugeMetricFamily("onss_relay_oldest_unsent_seconds", "Age of the oldest set not yet sent")
        age.add_metric([], time.time() - oldest[0].created_at if oldest else 0.0)
        yield age
        by_state = GaugeMetricFamily("onss_relay_sets", "Declaration sets by state", labels=["state"])
        for s in State:
            by_state.add_metric([s.value], counts.get(s, 0))
        yield by_state
        outcomes = self.journal.outcome_counts()
        by_outcome = GaugeMetricFamily(
            "onss_relay_sets_by_outcome",
            "Declaration sets by what the ONSS decided (refused, accepted …)",
            labels=["outcome"],
        )
        for o in OUTCOMES:
            by_outcome.add_metric([o], outcomes.get(o, 0))
        yield by_outcome
        unmatched = GaugeMetricFamily("onss_relay_unlinked_responses", "Answers kept that match no set we sent")
        unmatched.add_metric([], sum(self.journal.unmatched_counts().values()))
        yield unmatched
        late = GaugeMetricFamily(
            "onss_relay_overdue_sets", "Sets waiting past poll.acrf_overdue or notification_overdue"
        )
        # counted by the journal: every set sent or acknowledged read at each scrape held hundreds of MB with a
        # year of answered circuit tests (acknowledged for ever)
        late_acrf, late_notification = overdue_counts(self.journal, self.poll(), time.time())
        late.add_metric([], late_acrf + late_notification)
        yield late
        by_wait = GaugeMetricFamily(
            "onss_relay_overdue_waiting",
            "Overdue sets by what they wait for (the alert rules' split)",
            labels=["waiting"],
        )
        by_wait.add_metric(["acrf"], late_acrf)
        by_wait.add_metric(["notification"], late_notification)
        yield by_wait
        if self.spool is not None:
            waiting = GaugeMetricFamily(
                "onss_relay_outbox_unclaimed_files", "Outbox files not claimed yet (settling, waiting for parts)"
            )
            waiting.add_metric([], len(self.spool.unclaimed(self.journal)))
            yield waiting
            held = GaugeMetricFamily("onss_relay_quarantined_files", "Files in failed/, each with its reason")
            held.add_metric([], len(self.spool.quarantined()))
            yield held
        snap = self.snapshot()
        failures = CounterMetricFamily("onss_relay_stage_failures", "Failed runs per stage", labels=["stage"])
        for stage in snap.stages:
            failures.add_metric([stage.name], stage.failures)
        yield failures
        pruned = CounterMetricFamily(
            "onss_relay_pruned_files", "Files removed by retention since start, by kind", labels=["kind"]
        )
        for kind, n in snap.pruned:
            pruned.add_metric([kind], n)
        yield pruned
        poll = snap.stage("poll")
        last = GaugeMetricFamily("onss_relay_last_successful_poll_timestamp_seconds", "Unix time of the last good poll")
        last.add_metric([], poll.last_ok if poll and poll.last_ok else 0.0)
        yield last
        days = GaugeMetricFamily("onss_relay_certificate_days_left", "Days until the signing certificate expires")
        try:
            days.add_metric([], self.days_left())
        except Exception:  # an unreadable certificate shows as -1; check explains why
            days.add_metric([], -1)
        yield days
        healthy = GaugeMetricFamily("onss_relay_healthy", "1 when every stage runs and polls succeed")
        healthy.add_metric([], 1.0 if snap.healthy else 0.0)
        yield healthy
        yield from leadership_metrics(snap.leadership)


def leadership_metrics(doc: Mapping[str, object]) -> Iterator[GaugeMetricFamily]:
    """Given the relay lock's description, yield whether this relay leads, its epoch and since when it was a
    standby (0 when it is not one): on a standby, the active relay's epoch as last read."""
    leader = GaugeMetricFamily("onss_relay_is_leader", "1 when this relay is the active one (holds the relay lock)")
    leader.add_metric([], 1.0 if doc.get("leader") else 0.0)
    yield leader
    epoch = GaugeMetricFamily(
        "onss_relay_leader_epoch",
        "Leadership epoch held, or on a standby the active relay's (PostgreSQL journal; 0 with SQLite or unknown)",
    )
    epoch.add_metric([], float(doc.get("epoch") or doc.get("leader_epoch") or 0))  # type: ignore[arg-type]
    yield epoch
    standby = GaugeMetricFamily("onss_relay_standby_since_timestamp_seconds", "Unix time it became a standby, or 0")
    standby.add_metric([], float(doc.get("standby_since") or 0))  # type: ignore[arg-type]
    yield standby


def registry_for(collector: RelayCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry
