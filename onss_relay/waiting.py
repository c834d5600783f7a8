"""What a set waits for and since when: overdue past poll.acrf_overdue / notification_overdue, uncertain after a
connection given up, or done as a circuit test its ACRF answered. Plain rules over journal rows; nothing here
writes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from onss_relay.config import PollConfig
from onss_relay.errors import InvalidName
from onss_relay.journal import Journal, SetRow, State
from onss_relay.local_time import local_time
from onss_relay.names import circuit_test, circuit_tests, parse_name
from onss_relay.stages.uncertain import UNCERTAIN_STATES, quiet_left


def overdue(row: SetRow, poll: PollConfig, now: float) -> str | None:
    """Given a set, return why it is overdue (waiting longer than poll.acrf_overdue / notification_overdue), or None:
    the one wording every view shows (results/, status, the page), the same whenever it is read (the limit passed
    and since when, never a count of minutes that ages in a file)."""
    waited = now - row.updated_at
    if row.state == State.SENT and waited > poll.acrf_overdue:
        return f"no ACRF within {_span(poll.acrf_overdue)} of the GO (sent {local_time(row.updated_at)})"
    if row.state == State.ACKNOWLEDGED and waited > poll.notification_overdue and not answered_circuit_test(row):
        return f"no notification within {_span(poll.notification_overdue)} of the ACRF ({local_time(row.updated_at)})"
    return None


def overdue_sets(
    journal: Journal,
    poll: PollConfig,
    now: float,
    limit: int,
    after: Sequence[tuple[float, str]] = ((-1.0, ""), (-1.0, "")),
) -> list[tuple[SetRow, str]]:
    """Given the journal, the poll settings, the time now, a limit and where a walk of them stopped ((updated_at,
    GO name) of the sent, of the acknowledged), return up to ``limit`` sets overdue past it, oldest first, each
    with why: the journal leaves out what is never late (circuit tests answered by their ACRF, the rule of
    ``overdue``) before its limit, so that they cannot hide the late sets behind them."""
    waiting = journal.waiting_since_before(
        now - poll.acrf_overdue, now - poll.notification_overdue, limit, never_late=circuit_tests(), after=after
    )
    return [(row, why) for row in waiting if (why := overdue(row, poll, now))]


def overdue_counts(journal: Journal, poll: PollConfig, now: float) -> tuple[int, int]:
    """Given the journal, the poll settings and the time now, return how many sets are overdue waiting for their
    ACRF and for their notification (the rule of ``overdue``), counted by the journal: no set is read."""
    return journal.waiting_counts(now - poll.acrf_overdue, now - poll.notification_overdue, circuit_tests())


def is_circuit_test(go_name: str) -> bool:
    """Given a GO name, return True when it is a circuit test (DmfA in T): an ACRF answers it, no notification."""
    try:
        return circuit_test(parse_name(go_name))
    except InvalidName:
        return False


def answered_circuit_test(row: SetRow) -> bool:
    """Given a set, return True when it is a circuit test its ACRF accepted: done, nothing waits (waiting for a
    notification is not overdue, and nothing shows it as waiting)."""
    return row.state == State.ACKNOWLEDGED and not row.data.notifications and is_circuit_test(row.go_name)


def uncertain_document(row: SetRow) -> dict[str, Any] | None:
    """Given a set, return what makes it uncertain and when it will be decided, or None when it is not."""
    u = row.data.uncertain
    if u is None or row.state not in UNCERTAIN_STATES:
        return None
    left = quiet_left(u, 0.0)
    return {
        "step": u.step,  # "FI and FS" or GO in flight on a connection given up; uploading or go_sending: an unclean stop
        "given_up_at": iso(u.since),
        "quiet_period_s": u.quiet,
        # a fixed moment: once it has passed, the set is decided at the next upload round ("due")
        "decided_after": iso(time.time() + left if left > 0 else u.since + u.quiet),
        "due": left == 0,
    }


def iso(at: float) -> str:
    """Given a POSIX time, return it as an ISO 8601 UTC string to the second."""
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    """Given a duration in seconds, return it in words: seconds under a minute, then minutes, hours, days."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    return f"{s // 60} min" if s < 7200 else f"{s // 3600} h" if s < 172800 else f"{s // 86400} days"
