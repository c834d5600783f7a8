"""A set's view (set_view.py) as text for a terminal: `status NAME`."""

from __future__ import annotations

from pathlib import Path

from onss_relay.archived import archived_day
from onss_relay.journal import AcrfRecord, NotificationRecord
from onss_relay.local_time import local_time
from onss_relay.responses import rendering
from onss_relay.responses.codes import result_code, type_form
from onss_relay.views.set_view import SetView
from onss_relay.waiting import answered_circuit_test


def set_text(view: SetView, sent: Path | None = None) -> str:
    """Given a set's view and the spool's sent/ folder, return its story for a terminal: facts, ACRF, answers,
    where its sent files are in that spool (or that retention removed them), workers with anomalies and history.
    Without the sent/ folder, the journal's own path is shown and looked at."""
    row, doc = view.row, view.document()
    lines = [
        f"set:         {row.go_name}",
        f"environment: {row.env}",
        f"state:       {row.state}" + (" (circuit test: done, nothing waits)" if answered_circuit_test(row) else ""),
        f"outcome:     {doc['outcome']}",
        f"ticket:      {row.ticket or '-'}",
        *([f"tickets:     {', '.join(doc['tickets'])}"] if len(doc["tickets"]) > 1 else []),
        f"result:      {doc['result']}",
        *([f"overdue:     {doc['overdue']}"] if doc["overdue"] else []),
        f"parts:       {', '.join(row.parts)}",
    ]
    if row.data.acrf is not None:
        lines.append(f"acrf:        {_acrf_line(row.data.acrf)}")
    if doc["sent_dir"]:
        day = Path(doc["sent_dir"]) if sent is None else archived_day(sent, row) or Path(doc["sent_dir"])
        gone = not (day / row.go_name).exists()
        lines.append(f"sent files:  {day}" + (" (no longer there: pruned by retention.sent_days)" * gone))
    lines += [f"warning:     {w}" for w in row.data.warnings]
    lines += [f"answer:      {rendering(a.kind).status_line(a)}" for a in row.data.answers]
    lines += [f"answer:      {p}" for p in row.data.other_responses]
    for n in row.data.notifications:
        lines += _notification_lines(n)
    lines.append("history:")
    lines += [f"  {local_time(h['at'])}  {h['state']:<12} {h['detail'] or ''}".rstrip() for h in doc["history"]]
    return "\n".join(lines)


def _notification_lines(n: NotificationRecord) -> list[str]:
    """Given a notification, return one line per worker, one per anomaly kept and the counts of the others."""
    lines = []
    for w in n.workers:
        who = f"worker {w.inss}: " if w.inss else ""
        lines.append(f"notification: {who}{w.outcome} (result {w.result_code}: {result_code(w.result_code).meaning})")
        for a in w.anomalies:
            cls = f"{a.anomaly_class} {a.class_meaning.split(':')[0]}".strip()
            lines.append(
                f"  anomaly:   {a.error_id} {a.meaning or '-'} ({cls}) at {a.path or '-'}"
                + (f": {a.label}" if a.label else "")
                + (f" [{a.tag_name}={a.value}]" if a.tag_name else "")
            )
    shown = sum(len(w.anomalies) for w in n.workers)
    every = max(n.anomaly_count, sum(w.anomaly_count for w in n.workers))
    if every > shown:
        lines.append(f"  … {every - shown} more anomalies, all in {n.file}")
    if n.anomaly_count:
        by_class = ", ".join(f"{c}={k}" for c, k in sorted(n.anomalies_by_class.items()))
        by_code = ", ".join(f"{c}={k}" for c, k in list(n.anomalies_by_code.items())[:10])
        lines.append(f"  anomalies: {n.anomaly_count} (by class: {by_class}; most frequent: {by_code})")
    return lines


def _acrf_line(acrf: AcrfRecord) -> str:
    """Given a set's ACRF record, return what kind of answer it is (its TypeForm's meaning) and its result."""
    kind = f"{acrf.type_form} {type_form(acrf.type_form)}" if acrf.type_form else "no TypeForm"
    return f"{kind}; result {acrf.result_code}: {acrf.meaning or result_code(acrf.result_code).meaning}"
