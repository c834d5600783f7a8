"""The code tables shipped as data (onss_relay/data/*.tsv): every row is read by its reader in codes.py, the
meanings are the glossary's, and an answer polled from the real sshd shows them in status NAME."""

from __future__ import annotations

import csv
import importlib.resources
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onss_relay.commands.status import set_detail
from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.responses import codes
from onss_relay.responses.anomalies import KEPT_IN_ALL
from tests.conftest import SENDER, TODAY
from tests.fixtures.sshd import SshServer
from tests.test_real_answers import acrf, anomaly, form, notification, put, sent_set


def rows(name: str) -> list[dict[str, str]]:
    text = importlib.resources.files("onss_relay.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


# each code table, and how a row of it must read in the real output (status NAME and results/ of the sets
# answered in test_every_row_is_shown_by_a_reader)
SHOWN: dict[str, Callable[[dict[str, str]], str]] = {
    "acrf-codes.tsv": lambda r: f"{r['code']} {r['description']}",  # the refused set's result
    "anomaly-classes.tsv": lambda r: r["meaning"],  # each anomaly's class_meaning in results/
    "anomaly-kinds.tsv": lambda r: f"00237-{r['kind']} AccidentDate: {r['meaning']}",  # status NAME anomaly lines
    "anomaly-zones.tsv": lambda r: f"{r['zone']}-001 {r['name']}: missing",
    "diagnosis-codes.tsv": lambda r: f"diagnosis {r['code']}: {r['meaning']}",  # a refused notification's result
    "result-codes.tsv": lambda r: f"{r['outcome']} (result {r['code']}: {r['meaning']})",  # a worker's line
    "type-forms.tsv": lambda r: f"acrf:        {r['code']} {r['meaning']};",  # what kind of ACRF it is
}


def test_every_code_table_is_held_to_a_reader() -> None:
    data = importlib.resources.files("onss_relay.data")
    tables = {p.name for p in data.iterdir() if p.name.endswith(".tsv")} - {"application-codes.tsv"}  # names.py's
    assert tables == set(SHOWN)


def strings(doc: object) -> Iterator[str]:
    """Every string a JSON document holds."""
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from strings(v)


def dimona(seq: int) -> str:
    return f"GO.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1"


def test_every_row_is_shown_by_a_reader(sftp_cfg: Config, sshd: SshServer) -> None:
    """Answers carrying every code of every table, polled from the real sshd: each row's meaning is in what
    `status NAME` prints or results/ holds for them (not in what the readers return when called). The anomaly
    codes go in notifications of at most KEPT_IN_ALL anomalies each, so that every one is kept in detail."""
    relay = Relay(sftp_cfg)
    try:
        out: Path = sshd.home / "OUTTEST"
        diagnoses, type_forms = rows("diagnosis-codes.tsv"), [r["code"] for r in rows("type-forms.tsv")]
        located = [anomaly("00237-008", r["class"]) for r in rows("anomaly-classes.tsv")]
        located += [anomaly(f"00237-{r['kind']}", "P") for r in rows("anomaly-kinds.tsv")]
        located += [anomaly(f"{r['zone']}-001", "P") for r in rows("anomaly-zones.tsv")]
        chunks = ["".join(located[i : i + KEPT_IN_ALL]) for i in range(0, len(located), KEPT_IN_ALL)]
        sets = {90 + i: dimona(90 + i) for i in range(len(diagnoses) + 2 + len(chunks))}
        for seq, go in sets.items():
            sent_set(relay, go, f"FI.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1.1")
        refused, every_result, *rest = sets.values()
        each_diagnosis, each_chunk = rest[: len(diagnoses)], rest[len(diagnoses) :]
        put(
            out,
            f"FO.ACRF.999999.{TODAY}.R0001.T",
            acrf(refused, "0", errors=tuple(r["code"] for r in rows("acrf-codes.tsv"))),
        )
        answers = {every_result: [form(str(i), r["code"]) for i, r in enumerate(rows("result-codes.tsv"))]}
        answers |= {go: [form("1", "0", diagnosis=r["code"])] for go, r in zip(each_diagnosis, diagnoses, strict=True)}
        answers |= {go: [form("1", "1", chunk)] for go, chunk in zip(each_chunk, chunks, strict=True)}
        for i, (go, forms) in enumerate(answers.items()):
            ticket = f"0CODES{i:07d}"
            put(
                out,
                f"FO.ACRF.999999.{TODAY}.A{i:04d}.T",
                acrf(go, type_form=type_forms[i % len(type_forms)], ticket=ticket),
            )
            by_file = f"<FileReference><FileName>{go}</FileName><ReferenceNbr>{ticket}</ReferenceNbr></FileReference>"
            marked = [f.replace("<EmployerId>", by_file + "<EmployerId>") for f in forms]
            put(out, f"FO.NOTI.999999.{TODAY}.N{i:04d}.T", notification(*marked).encode())
        relay.poll_once()
        relay.results.catch_up()
        shown = "\n".join(set_detail(relay.journal, go) or "" for go in sets.values())
        for go in sets.values():
            shown += "\n".join(strings(json.loads((relay.spool.results / f"{go}.json").read_text())))
    finally:
        relay.close()
    missing = [(table, row) for table, show in SHOWN.items() for row in rows(table) if show(row) not in shown]
    assert missing == []


def test_the_meanings_are_the_glossarys() -> None:
    assert codes.anomaly_class("P").meaning.startswith("percentage error")
    assert codes.anomaly_class("NP").meaning.startswith("non-percentage error")
    assert "reduction" in codes.anomaly_class("D").meaning and "investigation" in codes.anomaly_class("I").meaning
    assert [c for c, k in codes.anomaly_classes().items() if k.blocking] == ["B"]
    assert codes.result_code("2").outcome == "pending" and "not an acceptance" in codes.result_code("2").meaning
    assert codes.diagnosis("3") == "refused: it holds blocking anomalies"
    assert codes.type_form("LA") == "limited answer"


def test_an_anomaly_code_reads_as_its_zone_and_kind() -> None:
    assert codes.explain_anomaly("00237-008") == "AccidentDate: not in the allowed domain"
    assert codes.explain_anomaly("99999-093") == "zone 99999: wrong length"  # a zone not in our table
    assert (
        codes.explain_anomaly("00011-155") == "NOSSRegistrationNbr: no (longer a) mandate"
    )  # kinds shared with the ACRF
    assert codes.explain_anomaly("00237-999") == "AccidentDate: kind 999 is not in our table"
    assert codes.explain_anomaly("00913-333") == "DimonaPeriodId: Dimona period given twice"  # a Dimona zone and kind


def test_every_code_the_onss_uses_in_its_own_examples_is_in_our_tables() -> None:
    """The ACRF refused in the ONSS's own example (ACRF-088, ACRF-172) and a DmfA zone's anomalies read as words,
    not as "not in our table"."""
    assert codes.describe("ACRF-088") == "ACRF-088: schema unknown"
    assert codes.describe("ACRF-172") == "ACRF-172: too many declarations for a file of this size"
    assert codes.explain_anomaly("00047-245") == "WorkingDaysSystem: to be checked"
    assert codes.explain_anomaly("00063-192") == "ServiceNbrDays: total number of days too high"
    kinds, zones = codes.anomaly_kinds(), codes.anomaly_zones()
    assert len(kinds) > 490 and len(zones) > 750  # the glossary's error kinds and zones, not a sample


# -- through a full poll on the real sshd -------------------------------------------------------

DMFA_GO = f"GO.DMFA.{SENDER}.{TODAY}.00003.R.1"
DMFA_FI = f"FI.DMFA.{SENDER}.{TODAY}.00003.R.1.1"


@pytest.fixture
def relay(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(sftp_cfg)
    yield r
    r.close()


def test_a_refused_notification_shows_what_each_code_means(relay: Relay, sshd: SshServer) -> None:
    sent_set(relay, DMFA_GO, DMFA_FI)
    out: Path = sshd.home / "OUT"
    put(out, f"FO.ACRF.999999.{TODAY}.00A01.R", acrf(DMFA_GO, ticket="0DMFATICKET01"))
    located = anomaly("00237-008", "P", "AccidentDate", "2026-02-30") + anomaly("00237-001", "NP", "AccidentDate")
    by_file = f"<FileReference><FileName>{DMFA_GO}</FileName><ReferenceNbr>0DMFATICKET01</ReferenceNbr></FileReference>"
    put(
        out,
        f"FO.NOTI.999999.{TODAY}.00A02.R",
        notification(form("1", "0", located, "3", file_reference=by_file)).encode(),
    )
    relay.poll_once()
    story = set_detail(relay.journal, DMFA_GO)
    assert story is not None
    assert "00237-008 AccidentDate: not in the allowed domain (P percentage error) at" in story
    assert "00237-001 AccidentDate: missing (NP non-percentage error)" in story
    assert "diagnosis 3: refused: it holds blocking anomalies" in story
    [note] = relay.journal.get_set(DMFA_GO).data.notifications  # type: ignore[union-attr]
    assert note.diagnosis_meaning == "refused: it holds blocking anomalies"
    assert note.workers[0].anomalies[0].meaning == "AccidentDate: not in the allowed domain"
