"""The code tables shipped as data (onss_relay/data/*.tsv): every row is read by its reader in codes.py, the
meanings are the glossary's, and an answer polled from the real sshd shows them in status NAME."""

from __future__ import annotations

import csv
import importlib.resources
from collections.abc import Callable
from pathlib import Path

import pytest

from onss_relay.commands.status import set_detail
from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.responses import codes
from tests.conftest import SENDER, TODAY
from tests.fixtures.sshd import SshServer
from tests.test_real_answers import acrf, anomaly, form, notification, put, sent_set


def rows(name: str) -> list[dict[str, str]]:
    text = importlib.resources.files("onss_relay.data").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


# each code table, and how a row of it must read through its reader
READERS: dict[str, Callable[[dict[str, str]], tuple[str, str]]] = {
    "acrf-codes.tsv": lambda r: (codes.describe(r["code"]), r["description"]),
    "anomaly-classes.tsv": lambda r: (codes.anomaly_class(r["class"]).meaning, r["meaning"]),
    "anomaly-kinds.tsv": lambda r: (codes.explain_anomaly(f"00237-{r['kind']}"), f"AccidentDate: {r['meaning']}"),
    "anomaly-zones.tsv": lambda r: (codes.explain_anomaly(f"{r['zone']}-001"), f"{r['name']}: missing"),
    "diagnosis-codes.tsv": lambda r: (codes.diagnosis(r["code"]), r["meaning"]),
    "result-codes.tsv": lambda r: (
        f"{codes.result_code(r['code']).outcome} {codes.result_code(r['code']).meaning}",
        f"{r['outcome']} {r['meaning']}",
    ),
    "type-forms.tsv": lambda r: (codes.type_form(r["code"]), r["meaning"]),
}


def test_every_code_table_is_held_to_a_reader() -> None:
    data = importlib.resources.files("onss_relay.data")
    tables = {p.name for p in data.iterdir() if p.name.endswith(".tsv")} - {"application-codes.tsv"}  # names.py's
    assert tables == set(READERS)


@pytest.mark.parametrize("table", sorted(READERS))
def test_every_row_is_used_by_its_reader(table: str) -> None:
    read = READERS[table]
    for row in rows(table):
        shown, expected = read(row)
        assert expected in shown, (table, row)


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
    assert codes.explain_anomaly("00011-155") == "zone 00011: no (longer a) mandate"  # kinds shared with the ACRF
    assert codes.explain_anomaly("00237-999") == "AccidentDate: kind 999 is not in our table"
    assert "kind 088" in codes.describe("ACRF-088")


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
