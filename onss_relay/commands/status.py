"""What to show a person (or a script) about declaration sets: tables, one set's story, JSON, health."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

from onss_relay.archived import archived_day
from onss_relay.commands.outbox_waits import ClaimBlock, unclaimed_reasons
from onss_relay.config import PollConfig, WatchConfig
from onss_relay.disk import disk_full
from onss_relay.health import daemon_health as daemon_health  # health.py decides; older importers find it here
from onss_relay.health import daemon_report as daemon_report
from onss_relay.journal import Journal, SetRow, State
from onss_relay.outcome import OUTCOMES, outcome_of
from onss_relay.spool import Spool
from onss_relay.views.set_text import set_text
from onss_relay.views.set_view import as_go as as_go  # the set views own them; older importers find them here
from onss_relay.views.set_view import find_set as find_set
from onss_relay.views.set_view import result_summary as result_summary
from onss_relay.views.set_view import set_view
from onss_relay.waiting import overdue


def _age(row: SetRow, now: float) -> str:
    s = int(now - row.updated_at)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def _result(row: SetRow, poll: PollConfig, now: float) -> str:
    late = overdue(row, poll, now)
    return result_summary(row) + (f"  OVERDUE: {late}" if late else "")


@dataclasses.dataclass(frozen=True)
class SpoolView:
    """What the spool holds outside the journal: outbox files not claimed yet, quarantined files, answers
    left on the server."""

    unclaimed: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    quarantined: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    left_on_server: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    block: ClaimBlock = dataclasses.field(default_factory=ClaimBlock)  # why nothing is claimed now, if so


def spool_view(spool: Spool, journal: Journal, watch: WatchConfig | None = None) -> SpoolView:
    """Given the spool and its journal, return what waits outside the journal and what keeps the relay from
    claiming outbox files now (no relay running, a full disk)."""
    root = spool.paths.root
    healthy, why = daemon_health(root)
    settle = (float(watch.settle), float(watch.settle_unknown)) if watch else (None, None)
    block = ClaimBlock(why if healthy is None else None, disk_full(root), *settle)
    return SpoolView(spool.unclaimed(journal), spool.quarantined(), spool.left_on_server(), block)


def status_table(
    journal: Journal, limit: int = 50, poll: PollConfig | None = None, view: SpoolView | None = None
) -> str:
    """Given the journal, return a readable table of recent sets, overdue ones marked, counts by state, the
    answers that match no set, and what waits outside the journal (outbox, failed/, left on the server)."""
    poll = poll or PollConfig()
    rows = journal.recent_sets(limit, light=True)  # no anomaly is read: the table shows summaries
    now = time.time()
    header = ("SET", "ENV", "STATE", "OUTCOME", "TICKET", "AGE", "RESULT")
    lines = [
        (r.go_name, r.env, str(r.state), outcome_of(r.go_name, r.state, r.data), r.ticket or "-", _age(r, now))
        + (_result(r, poll, now),)
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *lines]) for i in range(6)]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(line[:6], widths, strict=True)) + "  " + line[6]
        for line in [header, *lines]
    ]
    counts = journal.counts()
    out.append("")
    if sum(counts.values()) > len(rows):  # a year of history: the newest, and how many more
        out.append(
            f"the newest {len(rows)} of {sum(counts.values())} sets; `status --limit N` shows more,"
            " `status NAME` or `status TICKET` any one"
        )
    out.append("counts: " + (", ".join(f"{s}={counts[s]}" for s in State if s in counts) or "no sets yet"))
    outcomes = Counter(outcome_of(r.go_name, r.state, r.data) for r in rows)
    if outcomes:
        out.append("outcomes of these sets: " + ", ".join(f"{o}={outcomes[o]}" for o in OUTCOMES if o in outcomes))
    out += unlinked_lines(journal, limit)
    view = view or SpoolView()
    if view.unclaimed:
        reasons = unclaimed_reasons([name for name, _ in view.unclaimed], view.block)
        out += ["", f"outbox files not claimed yet ({len(view.unclaimed)}):"]
        out += [f"  {name}  {_seconds(age)}  {reasons[name]}" for name, age in view.unclaimed[:limit]]
    if view.quarantined:
        out += ["", f"quarantined in failed/ ({len(view.quarantined)} file(s)), newest first:"]
        out += [f"  {r.get('file')}  {r.get('reason')}: {r.get('detail')}" for r in view.quarantined[:limit]]
    if view.left_on_server:
        out += ["", f"answers left on the server ({len(view.left_on_server)}):"]
        out += [f"  {e['file']}  {e['size']} bytes  {e['why']}" for e in view.left_on_server]
    return "\n".join(out)


def unlinked_lines(journal: Journal, limit: int) -> list[str]:
    """Given the journal and a limit, return the lines about answers kept without a set: how many could not be
    read and how many match no set we sent (counted by the journal), the newest ``limit`` of each, and how many
    more there are."""
    counts = journal.unmatched_counts()
    damaged, unmatched = counts.get("malformed", 0), sum(counts.values()) - counts.get("malformed", 0)
    out = []
    if damaged:
        out += [
            "",
            f"answers that could not be read ({damaged}), kept in the inbox until retention.inbox_days: one may be"
            " the answer a set waits for",
        ]
        shown = journal.unmatched_responses(limit, malformed=True)
        out += [f"  {r.folder}/{r.name}  {r.local_path}" + (f"  ({r.detail})" if r.detail else "") for r in shown]
        out += [f"  … and {damaged - len(shown)} more"] if damaged > len(shown) else []
    if unmatched:
        out += ["", f"answers that match no set we sent ({unmatched}), kept in the inbox until retention.inbox_days:"]
        shown = journal.unmatched_responses(limit, malformed=False)
        out += [
            f"  {r.folder}/{r.name}  {r.kind}  {r.local_path}" + (f"  ({r.detail})" if r.detail else "") for r in shown
        ]
        out += [f"  … and {unmatched - len(shown)} more"] if unmatched > len(shown) else []
    return out


def _sent_here(doc: dict[str, Any], row: SetRow, sent: Path | None) -> dict[str, Any]:
    """Given a set's document, its row and the spool's sent/ folder (or None), return the document with its
    sent_dir re-rooted in that spool (archived.py: the journal keeps the path of the spool that archived it, a
    spool copied, moved or seen from a container keeps that path)."""
    if sent is not None and (day := archived_day(sent, row)) is not None:
        doc["sent_dir"] = str(day)
    return doc


def _seconds(age: float) -> str:
    s = int(age)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def set_detail(journal: Journal, name: str, poll: PollConfig | None = None, sent: Path | None = None) -> str | None:
    """Given a GO (or FI) name, or a ticket, the poll settings that say when a set is overdue and the spool's
    sent/ folder, return a readable story of that set (its sent files looked for in that folder), or None when it
    is unknown."""
    row = find_set(journal, name)
    return None if row is None else set_text(set_view(journal, row, poll), sent)


def status_json(
    journal: Journal,
    name: str | None = None,
    limit: int = 200,
    poll: PollConfig | None = None,
    view: SpoolView | None = None,
    sent: Path | None = None,
) -> dict[str, Any]:
    """Given the journal, return sets and counts as a JSON-ready dict (one set with its history when named); with
    the spool's sent/ folder, each set's sent_dir is its folder in that spool, as `status NAME` says it."""
    if name:
        row = find_set(journal, name)
        return {"set": _sent_here(set_view(journal, row, poll).document(), row, sent) if row else None}
    view = view or SpoolView()
    unclaimed = view.unclaimed
    reasons = unclaimed_reasons([n for n, _ in unclaimed], view.block)
    return {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "counts": journal.counts(),
        "sets": [_sent_here(set_view(journal, r, poll).document(), r, sent) for r in journal.recent_sets(limit)],
        "unlinked_responses": [
            {
                "folder": r.folder,
                "name": r.name,
                "kind": r.kind,
                "path": r.local_path,
                "reason": r.detail if r.kind == "malformed" else None,  # why it cannot be read
                "names": r.detail if r.kind != "malformed" else None,  # the FileName, tickets, result it names
            }
            for r in journal.unmatched_responses(limit)  # the newest; the count says how many in all
        ],
        "unlinked_response_count": sum(journal.unmatched_counts().values()),
        "unclaimed": [{"file": n, "age_s": round(a), "waiting": reasons[n]} for n, a in unclaimed],
        "quarantined": (view or SpoolView()).quarantined,
        "left_on_server": (view or SpoolView()).left_on_server,
    }
