"""The anomalies of a notification (its AnomalyReports): read one, count them as they stream by, keep a bounded
few in detail (blocking ones first), and say them in words.

A DmfA notification is one Form whose anomalies grow with the workforce: every one is counted (by class, by
code), at most KEPT_PER_FORM per Form and KEPT_IN_ALL per notification are kept in detail; the rest are in the
answer's file, which stays in the inbox.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Sequence
from xml.etree.ElementTree import Element

from onss_relay.journal import AnomalyRecord
from onss_relay.responses.codes import anomaly_class, anomaly_classes, explain_anomaly
from onss_relay.responses.reading import child, flatten_path, text

KEPT_PER_FORM = 100  # anomalies kept in detail per form, blocking ones first; the rest are counted
KEPT_IN_ALL = 100  # anomalies kept in detail per notification, across all its Forms; the rest are counted
TOP_CODES = 50  # anomaly codes counted one by one in a record; the others are summed under "other"


@dataclasses.dataclass(frozen=True)
class Anomaly:
    error_id: str
    anomaly_class: str | None
    path: str | None
    tag_name: str | None = None
    value: str | None = None
    label: str | None = None

    @property
    def blocking(self) -> bool:
        return anomaly_class(self.anomaly_class).blocking


class AnomalyTally:
    """The anomalies of one Form as they stream by: every one counted (by class, by code), the first
    KEPT_PER_FORM kept in detail, a blocking one taking the place of a non-blocking one when full."""

    def __init__(self) -> None:
        self.count = 0
        self.blocking = 0
        self.by_class: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self._kept: list[tuple[int, Anomaly]] = []

    def add(self, a: Anomaly) -> None:
        """Given the next anomaly of the form, count it and keep it if there is room (or it blocks)."""
        self.count += 1
        self.blocking += a.blocking
        self.by_class[_class_counted(a.anomaly_class)] += 1
        self.by_code[a.error_id] += 1
        if len(self._kept) < KEPT_PER_FORM:
            self._kept.append((self.count, a))
        elif a.blocking:
            mild = next((i for i, (_, k) in enumerate(self._kept) if not k.blocking), None)
            if mild is not None:
                del self._kept[mild]
                self._kept.append((self.count, a))

    def merge(self, other: AnomalyTally) -> None:
        """Given another form's tally, add its counts to this one's (a notification's totals)."""
        self.count += other.count
        self.blocking += other.blocking
        self.by_class.update(other.by_class)
        self.by_code.update(other.by_code)

    def kept(self) -> tuple[Anomaly, ...]:
        """Return the anomalies kept in detail, blocking ones first, each kind in file order."""
        return tuple(a for _, a in sorted(self._kept, key=lambda kept: not kept[1].blocking))

    def top_codes(self) -> dict[str, int]:
        """Return the count of each of the TOP_CODES most frequent codes, the others summed under "other"."""
        codes = dict(self.by_code.most_common(TOP_CODES))
        if len(self.by_code) > TOP_CODES:
            codes["other"] = self.count - sum(codes.values())
        return codes


@functools.cache
def _known_classes() -> frozenset[str]:
    """Return the anomaly classes of our table (zone 00497)."""
    return frozenset(anomaly_classes())


def _class_counted(value: str | None) -> str:
    """Given an anomaly's class, return the name it is counted under: a known class as itself, "?" when none
    is given, any other value under "other" (so that counts by class stay as few as the table's rows)."""
    if value is None:
        return "?"
    return value if value in _known_classes() else "other"


def read_anomaly(a: Element) -> Anomaly:
    """Given an AnomalyReport element, return the anomaly it reports."""
    return Anomaly(
        text(a, "ErrorID") or "?",
        text(a, "AnomalyClass"),
        flatten_path(child(a, "Path")),
        text(a, "TagName"),
        text(a, "Value"),
        text(a, "AnomalyLabel"),
    )


def anomaly_record(a: Anomaly) -> AnomalyRecord:
    """Given an anomaly, return its stored record, with its class's and its code's meanings."""
    cls = anomaly_class(a.anomaly_class)
    return AnomalyRecord(
        a.error_id,
        a.anomaly_class,
        a.path,
        cls.blocking,
        cls.meaning,
        a.tag_name,
        a.value,
        a.label,
        explain_anomaly(a.error_id),
    )


def kept_in_all(per_form: Sequence[tuple[Anomaly, ...]]) -> list[tuple[Anomaly, ...]]:
    """Given the anomalies each detailed Form of a notification keeps, return for each those kept in its record:
    KEPT_IN_ALL in all, blocking ones first (then by Form, in the order each Form keeps them)."""
    ranked = sorted(
        ((not a.blocking, i, j) for i, kept in enumerate(per_form) for j, a in enumerate(kept)),
    )[:KEPT_IN_ALL]
    chosen = {(i, j) for _, i, j in ranked}
    return [tuple(a for j, a in enumerate(kept) if (i, j) in chosen) for i, kept in enumerate(per_form)]


def blocking_word(a: Anomaly) -> str:
    """Given an anomaly, return "blocking", or its class's meaning in a few words."""
    return "blocking" if a.blocking else anomaly_class(a.anomaly_class).meaning.split(":")[0]


def anomaly_words(anomalies: tuple[Anomaly, ...], n: int) -> str:
    """Given a Form's kept anomalies and how many it has, return them in words for a summary ("" when none)."""
    if not anomalies:
        return ""
    codes = distinct_codes(anomalies)
    listed = ", ".join(f"{c} {explain_anomaly(c.split(' ', 1)[0])}, {w}" for c, w in codes[:3])
    return f", {n} anomal{'y' if n == 1 else 'ies'} ({listed}{', …' if len(codes) > 3 else ''})"


def distinct_codes(anomalies: Sequence[Anomaly]) -> list[tuple[str, str]]:
    """Given anomalies (blocking ones first), return each distinct code once, in that order, with how many
    times it came when more than once ("00237-008 ×15000") and its blocking word."""
    counts = Counter((a.error_id, blocking_word(a)) for a in anomalies)
    return [(f"{code} ×{n}" if n > 1 else code, word) for (code, word), n in counts.items()]
