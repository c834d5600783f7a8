"""One outcome per declaration set, beside its state: what a person (or a script reading one field) must know.

The state says where a set is in the relay's pipeline (``notified``: its notification came); the outcome says
what the ONSS decided: ``accepted``, ``accepted_with_anomalies``, ``partly_refused`` (some workers of a
Dimona refused), ``refused`` (by its ACRF or by its notification: ResultCode 0, or blocking anomalies),
``pending`` (nothing final yet: not sent, waiting, a proposal to validate, a temporary answer) or
``quarantined`` (never sent: kept in failed/ with its reason). Pure functions over journal values.
"""

from __future__ import annotations

from collections import Counter

from onss_relay.errors import InvalidName
from onss_relay.journal.model import NotificationRecord, SetData, SetRow, State, WorkerResult
from onss_relay.names import circuit_test, parse_name

OUTCOMES = ("accepted", "accepted_with_anomalies", "partly_refused", "refused", "pending", "quarantined")


def notification_outcome(n: NotificationRecord) -> str:
    """Given a notification's record, return what it decided (records written before outcomes were kept are
    read from their result code and anomalies)."""
    if n.outcome:
        return n.outcome
    if n.workers:  # its Forms' outcomes were stored (the detailed ones; the others were accepted)
        counts = Counter(_worker_outcome(w) for w in n.workers)
        counts["accepted"] += max(0, n.worker_count - len(n.workers))
        anomalies = sum(w.anomaly_count or len(w.anomalies) for w in n.workers) or len(n.anomalies)
        return forms_outcome(dict(counts), anomalies, 0)
    if n.accepted:
        return "accepted_with_anomalies" if n.anomalies or n.anomaly_count else "accepted"
    return "refused" if n.result_code in ("0", "4") else "pending"


def _worker_outcome(w: WorkerResult) -> str:
    """Given a worker's stored result, return its outcome: refused when it has a blocking anomaly."""
    return "refused" if w.outcome == "accepted" and any(a.blocking for a in w.anomalies) else w.outcome


def forms_outcome(counts: dict[str, int], anomalies: int, blocking: int) -> str:
    """Given a notification's Forms counted by outcome (accepted, refused, pending) and its anomalies (all, and
    blocking ones), return its outcome: a single Form accepted with a blocking anomaly is a refusal."""
    accepted, refused, pending = (counts.get(k, 0) for k in ("accepted", "refused", "pending"))
    if refused and accepted:
        return "partly_refused"
    if refused:
        return "refused"
    if pending:
        return "pending"
    if blocking:
        return "refused" if accepted == 1 else "partly_refused"
    return "accepted_with_anomalies" if anomalies else "accepted"


def outcome_of(go_name: str, state: State, data: SetData) -> str:
    """Given a set's name, state and data, return its outcome (one of OUTCOMES)."""
    if state == State.FAILED:
        return "quarantined"
    if state == State.REFUSED:
        return "refused"
    if data.notifications:
        return notifications_outcome(data.notifications)
    acrf = data.acrf
    if state == State.ACKNOWLEDGED and acrf is not None and acrf.accepted and acrf.final and _circuit_test(go_name):
        return "accepted"  # a DmfA in T: its ACRF is the whole answer
    return "pending"


def final_answer(row: SetRow) -> bool:
    """Given a set, return whether the ONSS's final answer to it is in: refused by a final ACRF (or after its
    notifications), notified with an outcome that is not pending, or a circuit test (DmfA in T) its ACRF
    accepted. A refusal by a provisional ACRF (PA: "a final one may follow and decides") and a notification
    still pending (a temporary answer, a proposal to validate) are not, whatever the state says. The one rule:
    the on_result hook tells these (hooks.py), retention prunes these and the quarantined (retention.py)."""
    data = row.data
    if row.state == State.REFUSED:
        return bool(data.notifications) or data.acrf is None or data.acrf.final
    if row.state == State.NOTIFIED:
        return outcome_of(row.go_name, row.state, data) != "pending"
    return row.state == State.ACKNOWLEDGED and not data.notifications and _circuit_test(row.go_name)


def notifications_outcome(notifications: tuple[NotificationRecord, ...]) -> str:
    """Given a set's notifications in the order they came, return the outcome of them all: the latest answer
    per worker (INSS) replaces an earlier one for the same worker, and one without workers named replaces
    the earlier whole-declaration answer; a Dimona answered Form by Form is refused in part if any is."""
    if len(notifications) == 1:
        return notification_outcome(notifications[0])
    latest: dict[str | None, str] = {}
    for n in notifications:
        named = [w for w in n.workers if w.inss]
        if named and len(named) >= n.worker_count:  # every Form of it is kept, each naming its worker
            latest.update((w.inss, _worker_outcome(w) if not w.anomaly_count else _anomalous(w)) for w in named)
        else:
            latest[None] = notification_outcome(n)
    return _combined(list(latest.values()))


def _anomalous(w: WorkerResult) -> str:
    """Given a worker with anomalies, return its outcome, accepted ones marked as having anomalies."""
    outcome = _worker_outcome(w)
    return "accepted_with_anomalies" if outcome == "accepted" else outcome


def _combined(outcomes: list[str]) -> str:
    """Given the latest outcome per worker (or of the whole declaration), return the set's one outcome."""
    kinds = set(outcomes)
    refused = kinds & {"refused", "partly_refused"}
    accepted = kinds & {"accepted", "accepted_with_anomalies", "partly_refused"}
    if refused:
        return "partly_refused" if accepted else "refused"
    if "pending" in kinds:
        return "pending"
    return "accepted_with_anomalies" if "accepted_with_anomalies" in kinds else "accepted"


def _circuit_test(go_name: str) -> bool:
    try:
        return circuit_test(parse_name(go_name))
    except InvalidName:
        return False
