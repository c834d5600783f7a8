"""results/<GO name>.json: one file per declaration set, rewritten atomically at each change, for folder readers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from onss_relay.config import PollConfig
from onss_relay.durable import atomic_write
from onss_relay.errors import InvalidName
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import circuit_test, parse_name
from onss_relay.spool import Spool
from onss_relay.stages.uncertain import UNCERTAIN_STATES, decide_at


def overdue(row: SetRow, poll: PollConfig, now: float) -> str | None:
    """Given a set, return why it is overdue (waiting longer than poll.acrf_overdue / notification_overdue), or None."""
    waited = now - row.updated_at
    if row.state == State.SENT and waited > poll.acrf_overdue:
        return f"no ACRF {_span(waited)} after the GO was sent"
    if row.state == State.ACKNOWLEDGED and waited > poll.notification_overdue and not _circuit_test(row.go_name):
        return f"no notification {_span(waited)} after the ACRF"
    return None


def _circuit_test(go_name: str) -> bool:
    """A circuit test (DmfA in T) gets an ACRF and no notification: waiting for one is not overdue."""
    try:
        return circuit_test(parse_name(go_name))
    except InvalidName:
        return False


def _span(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60} min" if s < 7200 else f"{s // 3600} h" if s < 172800 else f"{s // 86400} days"


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def result_document(
    row: SetRow, history: list[tuple[float, str, str | None]], poll: PollConfig | None = None
) -> dict[str, Any]:
    """Given a set's journal row and history, return the JSON document describing it."""
    return {
        "set": row.go_name,
        "environment": row.env,
        "state": str(row.state),
        "ticket": row.ticket,
        "reason": row.reason,
        "parts": row.parts,
        "acrf": dataclasses.asdict(row.data.acrf) if row.data.acrf else None,
        "notifications": [dataclasses.asdict(n) for n in row.data.notifications],
        "other_responses": list(row.data.other_responses),
        "warnings": list(row.data.warnings),
        "sent_dir": row.data.sent_dir,
        "since": _iso(row.updated_at),  # in this state since
        "overdue": overdue(row, poll or PollConfig(), time.time()),
        "uncertain": uncertain_document(row),
        "history": [
            {
                "at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds"),
                "state": state,
                "detail": detail,
            }
            for at, state, detail in history
        ],
    }


def uncertain_document(row: SetRow) -> dict[str, Any] | None:
    """Given a set, return what makes it uncertain and when it will be decided, or None when it is not."""
    u = row.data.uncertain
    if u is None or row.state not in UNCERTAIN_STATES:
        return None
    return {
        "step": u.step,  # FI, FS or GO in flight on a connection given up; uploading or go_sending: an unclean stop
        "given_up_at": _iso(u.since),
        "quiet_period_s": u.quiet,
        "decided_after": _iso(decide_at(u, 0.0)),
    }


def write_result(spool: Spool, journal: Journal, row: SetRow) -> Path:
    """Given a set, (re)write results/<GO name>.json atomically and return its path."""
    path = spool.results / f"{row.go_name}.json"
    doc = result_document(row, journal.history(row.go_name))
    atomic_write(path, json.dumps(doc, indent=2).encode(), sync=False)  # derived from the journal
    return path


class ResultsWriter:
    """Keeps results/<GO name>.json in step with the journal, from a set's first state on (queued, sent,
    failed here, refused by the transfer point …): a folder-reading HR system sees every set as it goes."""

    def __init__(self, spool: Spool, journal: Journal) -> None:
        self.spool = spool
        self.journal = journal
        # from the newest result written, so that a restart writes only what changed meanwhile
        with os.scandir(spool.results) as entries:
            self.since = max((e.stat().st_mtime for e in entries if e.name.endswith(".json")), default=0.0)

    def catch_up(self) -> int:
        """Write the result of every set changed since the last call; return how many were written."""
        rows = self.journal.sets_updated_since(self.since)
        for row in rows:
            write_result(self.spool, self.journal, row)
            self.since = max(self.since, row.updated_at)
        return len(rows)
