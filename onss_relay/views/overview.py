"""The overview a payroll office and a sysadmin read first: what is refused or late, what came today, what is
quarantined or unlinked, and whether every stage of the relay is well."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from onss_relay.health import StageFigures
from onss_relay.journal import IN_FLIGHT, ResponseRow, State
from onss_relay.views.chart import Chart, daily_chart
from onss_relay.views.set_view import SetLine, set_line
from onss_relay.views.sources import Sources
from onss_relay.waiting import overdue_counts, overdue_sets

SHOWN = 50  # sets per list; the search finds the others
CHART_DAYS = 30
REFUSED_OUTCOMES = ("refused", "partly_refused")


@dataclasses.dataclass(frozen=True)
class Overview:
    generated_at: float
    healthy: bool
    health_reason: str
    counts: tuple[tuple[str, int], ...]  # by state, in the state machine's order
    queue_depth: int
    last_good_poll: float | None
    certificate_days_left: int | None  # None: the certificate cannot be read
    stages: tuple[StageFigures, ...]
    refused: tuple[SetLine, ...]
    overdue: tuple[SetLine, ...]
    recent: tuple[SetLine, ...]
    quarantined: tuple[dict[str, Any], ...]
    unlinked: tuple[ResponseRow, ...]  # the newest SHOWN
    unlinked_count: int  # all of them
    chart: Chart
    overdue_count: int = 0  # all of them (``overdue`` lists the oldest SHOWN)
    shown: int = SHOWN  # a list this long may hold only the first of more: the page says so


def overview(src: Sources, now: float | None = None) -> Overview:
    """Given the sources and the time now, return the overview: refused and overdue sets first, then the
    recent ones, quarantined files, unlinked answers, the health of each stage and the chart of 30 days."""
    now = time.time() if now is None else now
    poll = src.poll()
    counts = src.journal.counts()
    refused_rows = {r.go_name: r for r in src.journal.sets_with_outcome(REFUSED_OUTCOMES, SHOWN)}
    refused_rows |= {r.go_name: r for r in src.journal.sets_in(State.REFUSED, limit=SHOWN)}
    late = [set_line(r, poll, now) for r, _ in overdue_sets(src.journal, poll, now, SHOWN)]
    snap = src.snapshot()
    poll_stage = snap.stage("poll")
    return Overview(
        generated_at=now,
        healthy=snap.healthy,
        health_reason=snap.reason,
        counts=tuple((str(s), counts.get(s, 0)) for s in State),
        queue_depth=sum(counts.get(s, 0) for s in IN_FLIGHT),
        last_good_poll=poll_stage.last_ok if poll_stage else None,
        certificate_days_left=_days_left(src),
        stages=tuple(snap.stages),
        refused=tuple(set_line(r, poll, now) for r in refused_rows.values())[:SHOWN],
        overdue=tuple(late),
        recent=tuple(set_line(r, poll, now) for r in src.journal.recent_sets(SHOWN, light=True)),
        quarantined=tuple(src.spool.quarantined()[:SHOWN]),
        unlinked=tuple(src.journal.unmatched_responses(SHOWN)),
        unlinked_count=sum(src.journal.unmatched_counts().values()),
        chart=_chart(src, now),
        overdue_count=sum(overdue_counts(src.journal, poll, now)),
    )


CHART_FRESH = 60.0  # seconds a chart is reused: a page refreshed often does not recount 30 days each time
_charts: dict[int, tuple[float, Chart]] = {}  # id(journal) → (when counted, chart)


def _chart(src: Sources, now: float) -> Chart:
    """Given the sources and the time now, return the 30-day chart, counted again when older than CHART_FRESH
    seconds (or from another UTC day)."""
    cached = _charts.get(id(src.journal))
    if cached and 0 <= now - cached[0] < CHART_FRESH and int(now // 86400) == int(cached[0] // 86400):
        return cached[1]
    chart = daily_chart(src.journal.daily_outcomes(CHART_DAYS, now), CHART_DAYS, now)
    _charts[id(src.journal)] = (now, chart)
    return chart


def _days_left(src: Sources) -> int | None:
    """Given the sources, return the signing certificate's days left, or None when it cannot be read."""
    try:
        return src.days_left()
    except Exception:  # an unreadable certificate: `check` says why; the page says "unknown"
        return None
