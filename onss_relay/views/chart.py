"""Declarations per day over the last days, by outcome, as bars for a server-rendered SVG (no script)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from onss_relay.outcome import OUTCOMES

WIDTH, HEIGHT, BOTTOM, LEFT = 720, 200, 24, 36  # the drawing, in SVG units; BOTTOM: room for day labels
RIGHT = 24  # room right of the last bar for the rest of its day label ("11-30", centred under the bar)
COLOURS = {
    "accepted": "#2e7d32",
    "accepted_with_anomalies": "#9e9d24",
    "partly_refused": "#ef6c00",
    "refused": "#c62828",
    "pending": "#90a4ae",
    "quarantined": "#6a1b9a",
}


@dataclasses.dataclass(frozen=True)
class Segment:
    outcome: str
    count: int
    y: float
    height: float
    colour: str


@dataclasses.dataclass(frozen=True)
class Bar:
    day: str
    total: int
    x: float
    width: float
    segments: tuple[Segment, ...]
    label: bool  # the day is written under it (every 5th, and the last)


@dataclasses.dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    bottom: int = BOTTOM
    left: int = LEFT
    legend: tuple[tuple[str, str], ...] = tuple(COLOURS.items())


def daily_chart(counts: list[tuple[str, str, int]], days: int, now: float) -> Chart:
    """Given (UTC day, outcome, count) rows, a number of days and the time now, return one stacked bar a day,
    oldest first, scaled to the busiest day (an empty day is an empty bar)."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    names = [(today - dt.timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    per_day: dict[str, dict[str, int]] = {d: {} for d in names}
    for day, outcome, n in counts:
        if day in per_day:
            per_day[day][outcome] = per_day[day].get(outcome, 0) + n
    peak = max((sum(v.values()) for v in per_day.values()), default=0) or 1
    slot = (WIDTH - LEFT - RIGHT) / days
    plot = HEIGHT - BOTTOM
    bars = []
    for i, day in enumerate(names):
        y = float(plot)
        segments = []
        for outcome in sorted(per_day[day], key=lambda o: OUTCOMES.index(o) if o in OUTCOMES else len(OUTCOMES)):
            h = per_day[day][outcome] / peak * (plot - 8)
            y -= h
            segments.append(Segment(outcome, per_day[day][outcome], y, h, COLOURS.get(outcome, "#455a64")))
        label = i % 5 == 0 or i == days - 1
        bars.append(Bar(day, sum(per_day[day].values()), LEFT + i * slot + 1, slot - 2, tuple(segments), label))
    return Chart(tuple(bars), peak)
