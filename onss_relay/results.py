"""results/<GO name>.json: one file per declaration set, rewritten atomically at each change, for folder readers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from onss_relay.durable import atomic_write
from onss_relay.journal import Journal, SetRow
from onss_relay.spool import Spool


def result_document(row: SetRow, history: list[tuple[float, str, str | None]]) -> dict[str, Any]:
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
        "sent_dir": row.data.sent_dir,
        "history": [
            {"at": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds"), "state": state, "detail": detail}
            for at, state, detail in history
        ],
    }


def write_result(spool: Spool, journal: Journal, go_name: str) -> Path:
    """Given a set, (re)write results/<GO name>.json atomically and return its path."""
    row = journal.get_set(go_name)
    assert row is not None
    path = spool.results / f"{go_name}.json"
    atomic_write(path, json.dumps(result_document(row, journal.history(go_name)), indent=2).encode())
    return path
