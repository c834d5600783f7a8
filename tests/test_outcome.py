"""A refusal reads as a refusal wherever one field is read (issue 23 item 3): results/<GO>.json, status --json,
status and /metrics give one outcome beside the state. Answers in the ONSS's published shapes, through a full
poll on the real sshd; status as a separate process."""

from __future__ import annotations

import json

import pytest
from prometheus_client import generate_latest

from onss_relay.config import Config
from onss_relay.metrics import HealthSnapshot, RelayCollector, registry_for
from onss_relay.pipeline import Relay
from tests.conftest import SENDER, TODAY
from tests.fixtures.sshd import SshServer
from tests.helpers import run_cli
from tests.test_real_answers import acrf, anomaly, form, notification, put, sent_set


def go(seq: int, app: str = "DIMN") -> str:
    return f"GO.{app}.{SENDER}.{TODAY}.{seq:05d}.T.1"


def by_file(seq: int) -> str:
    return f"<FileReference><FileName>{go(seq)}</FileName><ReferenceNbr>0TICKET{seq:06d}</ReferenceNbr></FileReference>"


ANSWERS = {  # sequence → (its notification's Forms, the outcome every reader must show)
    41: ([form("1", "1")], "accepted"),
    42: ([form("1", "1", anomaly("00237-008", "W"))], "accepted_with_anomalies"),
    43: ([form("1", "0", anomaly("00237-008", "B"), "3")], "refused"),
    44: ([form("1", "1", anomaly("00237-001", "B"))], "refused"),  # ResultCode 1 with a blocking anomaly
    45: ([form("1", "1"), form("2", "0", anomaly("90373-333", "B"))], "partly_refused"),  # a Dimona, 2 workers
    46: ([form("1", "2")], "pending"),  # a proposal still to validate is not an acceptance
    # a worker with a blocking anomaly is refused, whatever its ResultCode: both → refused; one → partly refused
    48: ([form("1", "1", anomaly("00237-001", "B")), form("2", "1", anomaly("00237-008", "B"))], "refused"),
    49: ([form("1", "1", anomaly("00237-001", "B")), form("2", "1")], "partly_refused"),
}


@pytest.fixture
def relay(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(sftp_cfg)
    yield r
    r.close()


def test_every_reader_sees_one_outcome(relay: Relay, sshd: SshServer, sftp_cfg: Config) -> None:
    out = sshd.home / "OUTTEST"
    for seq, (forms, _) in ANSWERS.items():
        sent_set(relay, go(seq), f"FI.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1.1")
        put(out, f"FO.ACRF.999999.{TODAY}.A{seq:04d}.T", acrf(go(seq), ticket=f"0TICKET{seq:06d}"))
        marked = [f.replace("<EmployerId>", by_file(seq) + "<EmployerId>") for f in forms]
        put(out, f"FO.NOTI.999999.{TODAY}.N{seq:04d}.T", notification(*marked).encode())
    sent_set(relay, go(47, "DMFA"), f"FI.DMFA.{SENDER}.{TODAY}.00047.T.1.1")  # refused by its ACRF
    put(out, f"FO.ACRF.999999.{TODAY}.A0047.T", acrf(go(47, "DMFA"), "0", errors=("ACRF-125",), ticket="0TICKET47"))
    relay.poll_once()
    relay.results.catch_up()
    expected = {go(seq): o for seq, (_, o) in ANSWERS.items()} | {go(47, "DMFA"): "refused"}

    results = {g: json.loads((relay.spool.results / f"{g}.json").read_text()) for g in expected}
    assert {g: d["outcome"] for g, d in results.items()} == expected
    assert results[go(43)]["state"] == "notified"  # the state alone says only that the notification came

    args = ["--config", str(sftp_cfg.source)]
    doc = json.loads(run_cli("status", "--json", *args).stdout)
    assert {s["set"]: s["outcome"] for s in doc["sets"]} == expected
    table = run_cli("status", *args).stdout
    for g, o in expected.items():
        [line] = [x for x in table.splitlines() if x.startswith(g)]
        assert line.split()[3] == o, line  # SET ENV STATE OUTCOME …
    story = run_cli("status", go(43), *args).stdout
    assert "outcome:     refused" in story
    assert "2 workers: 2 refused" in run_cli("status", go(48), *args).stdout

    collector = RelayCollector(relay.journal, lambda: HealthSnapshot(True, "ok", ()), lambda: 30)
    text = generate_latest(registry_for(collector)).decode()
    assert 'onss_relay_sets_by_outcome{outcome="refused"} 4.0' in text
    assert 'onss_relay_sets_by_outcome{outcome="partly_refused"} 2.0' in text
    assert 'onss_relay_sets_by_outcome{outcome="pending"} 1.0' in text


def test_blocking_anomalies_are_kept_and_given_first(relay: Relay, sshd: SshServer, sftp_cfg: Config) -> None:
    """A Form whose blocking anomaly comes after mild ones: it is kept first and is the reason given."""
    out = sshd.home / "OUTTEST"
    mild = "".join(anomaly(f"00237-00{i}", "W") for i in (1, 2, 3))
    forms = {
        50: [form("1", "1", mild + anomaly("00237-008", "B"))],
        51: [form("1", "0", mild + anomaly("00237-008", "B")), form("2", "1")],
    }
    for seq, fs in forms.items():
        sent_set(relay, go(seq), f"FI.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1.1")
        put(out, f"FO.ACRF.999999.{TODAY}.A{seq:04d}.T", acrf(go(seq), ticket=f"0TICKET{seq:06d}"))
        marked = [f.replace("<EmployerId>", by_file(seq) + "<EmployerId>") for f in fs]
        put(out, f"FO.NOTI.999999.{TODAY}.N{seq:04d}.T", notification(*marked).encode())
    relay.poll_once()
    relay.results.catch_up()
    for seq in forms:
        doc = json.loads((relay.spool.results / f"{go(seq)}.json").read_text())
        [noti] = doc["notifications"]
        worker = noti["workers"][0]
        assert [a["error_id"] for a in worker["anomalies"]][0] == "00237-008", worker
        assert "(00237-008" in noti["summary"], noti["summary"]  # the blocking one is the reason given


def test_sets_of_a_journal_from_before_outcomes_get_theirs_at_the_upgrade(relay: Relay, sshd: SshServer) -> None:
    """A journal of the version before outcomes (no outcome column, records without one): opening it computes
    each set's outcome from its stored data and writes its result again (the cursor had passed it)."""
    import sqlite3

    out = sshd.home / "OUTTEST"
    two = [form("1", "1"), form("2", "0", anomaly("90373-333", "B"))]
    sent_set(relay, go(60), f"FI.DIMN.{SENDER}.{TODAY}.00060.T.1.1")
    put(out, f"FO.ACRF.999999.{TODAY}.A0060.T", acrf(go(60), ticket="0TICKET000060"))
    put(
        out,
        f"FO.NOTI.999999.{TODAY}.N0060.T",
        notification(*[f.replace("<EmployerId>", by_file(60) + "<EmployerId>") for f in two]).encode(),
    )
    relay.poll_once()
    relay.results.catch_up()
    relay.close()
    db = sqlite3.connect(relay.spool.paths.root / "journal.db")  # as the version before outcomes left it
    data = json.loads(db.execute("SELECT data FROM sets WHERE go_name = ?", (go(60),)).fetchone()[0])
    for n in data["notifications"]:
        for k in ("outcome", "anomaly_count", "anomalies_by_class", "anomalies_by_code", "diagnosis_meaning"):
            n.pop(k, None)
    db.execute("UPDATE sets SET data = ? WHERE go_name = ?", (json.dumps(data), go(60)))
    for (index,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '%outcome%'"
    ).fetchall():
        db.execute(f"DROP INDEX {index}")  # the version before outcomes had no index on them either
    db.execute("ALTER TABLE sets DROP COLUMN outcome")
    db.commit()
    db.close()
    result = relay.spool.results / f"{go(60)}.json"
    old = json.loads(result.read_text())
    del old["outcome"]
    result.write_text(json.dumps(old))

    upgraded = Relay(relay.cfg)
    try:
        upgraded.results.catch_up()
        assert json.loads(result.read_text())["outcome"] == "partly_refused"
        assert upgraded.journal.outcome_counts() == {"partly_refused": 1}
    finally:
        upgraded.close()


def test_a_dimona_answered_form_by_form_reads_all_its_answers(relay: Relay, sshd: SshServer, sftp_cfg: Config) -> None:
    """Issue 23, review 2: one notification per worker; the set's outcome comes from all of them, the latest
    answer for a worker replacing an earlier one."""
    out = sshd.home / "OUTTEST"
    answers = {  # sequence → its notifications, one Form each, in the order they come → the set's outcome
        60: ([form("1", "1"), form("2", "0", anomaly("90373-333", "B"), "3"), form("3", "1")], "partly_refused"),
        61: ([form("1", "0", anomaly("90373-333", "B"), "3"), form("1", "1")], "accepted"),
    }
    for seq in answers:
        sent_set(relay, go(seq), f"FI.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1.1")
        put(out, f"FO.ACRF.999999.{TODAY}.A{seq:04d}.T", acrf(go(seq), ticket=f"0TICKET{seq:06d}"))
    relay.poll_once()
    for i in range(3):  # each notification in its own poll: they come one after the other
        for seq, (forms, _) in answers.items():
            if i < len(forms):
                marked = forms[i].replace("<EmployerId>", by_file(seq) + "<EmployerId>")
                put(out, f"FO.NOTI.999999.{TODAY}.N{seq:02d}{i:02d}.T", notification(marked).encode())
        relay.poll_once()
    relay.results.catch_up()
    expected = {go(seq): o for seq, (_, o) in answers.items()}
    results = {g: json.loads((relay.spool.results / f"{g}.json").read_text()) for g in expected}
    assert {g: d["outcome"] for g, d in results.items()} == expected
    assert len(results[go(60)]["notifications"]) == 3
    doc = json.loads(run_cli("status", "--json", "--config", str(sftp_cfg.source)).stdout)
    assert {s["set"]: s["outcome"] for s in doc["sets"] if s["set"] in expected} == expected
