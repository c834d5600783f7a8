"""Times for people: this machine's local time with its zone (`2026-11-30 15:44:12 CET`), in `status` and in the
sentences of quarantine reasons and refusals; JSON fields stay ISO UTC."""

from __future__ import annotations

import datetime as dt


def local_time(at: float | str | None) -> str:
    """Given a POSIX time or an ISO time, return it in this machine's local time with its zone, or "-"."""
    if at is None or at == "":
        return "-"
    when = dt.datetime.fromisoformat(at) if isinstance(at, str) else dt.datetime.fromtimestamp(at, dt.UTC)
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
