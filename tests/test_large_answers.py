"""Any size in bounded memory (issue 23 item 4): a DmfA notification is one Form whose anomalies grow with the
workforce. Inside a Form the anomalies stream: counted by class and by code, the first kept in detail
(blocking ones first), each stored once, the file named for the rest; memory does not grow with the file."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest

from onss_relay.commands.status import set_detail
from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.responses.anomalies import KEPT_IN_ALL, KEPT_PER_FORM
from onss_relay.responses.notification import parse_notification
from tests.conftest import SENDER, TODAY
from tests.fixtures.sshd import SshServer
from tests.test_real_answers import acrf, put, sent_set

GO = f"GO.DMFA.{SENDER}.{TODAY}.00051.R.1"
FI = f"FI.DMFA.{SENDER}.{TODAY}.00051.R.1.1"


def dmfa_notification(anomalies: int, blocking_at_end: int = 3) -> bytes:
    """One Form (a DmfA declaration) with ``anomalies`` non-blocking anomalies, then a few blocking ones."""
    head = f"""<?xml version="1.0" encoding="UTF-8"?>\r\n<NOTIFICATION><Form><Identification>NOTI001</Identification>
<FileReference><FileName>{GO}</FileName><ReferenceNbr>0BIGTICKET001</ReferenceNbr></FileReference>
<EmployerId>{SENDER}</EmployerId><HandlingResult><ResultCode>0</ResultCode><Diagnosis>3</Diagnosis>"""
    body = io.StringIO()
    body.write(head)
    for i in range(anomalies + blocking_at_end):
        kind, cls = ("00237-008", "P") if i < anomalies else ("00237-001", "B")
        body.write(
            f"<AnomalyReport><ErrorID>{kind}</ErrorID><TagName>AccidentDate</TagName><Value>{i}</Value>"
            f"<AnomalyClass>{cls}</AnomalyClass><Path><NaturalPerson>{i}</NaturalPerson></Path></AnomalyReport>\r\n"
        )
    body.write("</HandlingResult></Form></NOTIFICATION>\r\n")
    return body.getvalue().encode()


def parse_peak(data: bytes) -> int:
    tracemalloc.start()
    try:
        parse_notification(io.BytesIO(data))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_anomalies_of_one_form() -> None:
    small, large = dmfa_notification(2_000), dmfa_notification(16_000)
    peaks = parse_peak(small), parse_peak(large)
    assert peaks[1] < 2 * peaks[0] + 1_000_000, peaks  # eight times the anomalies, not eight times the memory


@pytest.fixture
def relay(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(sftp_cfg)
    yield r
    r.close()


def test_a_form_with_thousands_of_anomalies_is_counted_and_kept_small(relay: Relay, sshd: SshServer) -> None:
    sent_set(relay, GO, FI)
    out: Path = sshd.home / "OUT"
    put(out, f"FO.ACRF.999999.{TODAY}.B0001.R", acrf(GO, ticket="0BIGTICKET001"))
    put(out, f"FO.NOTI.999999.{TODAY}.B0002.R", dmfa_notification(20_000))
    relay.poll_once()
    relay.results.catch_up()
    result = relay.spool.results / f"{GO}.json"
    doc = json.loads(result.read_text())
    assert doc["outcome"] == "refused" and result.stat().st_size < 200_000
    [note] = doc["notifications"]
    assert note["anomaly_count"] == 20_003 and note["anomalies_by_class"] == {"P": 20_000, "B": 3}
    assert note["anomalies_by_code"] == {"00237-008": 20_000, "00237-001": 3}
    assert note["anomalies"] == []  # each anomaly stored once: under its worker
    [worker] = note["workers"]
    kept = worker["anomalies"]
    assert len(kept) == KEPT_PER_FORM and worker["anomaly_count"] == 20_003
    assert [a["error_id"] for a in kept if a["blocking"]] == ["00237-001"] * 3  # blocking ones are never dropped
    story = set_detail(relay.journal, GO) or ""
    assert len(story.splitlines()) < KEPT_PER_FORM + 30
    assert f"… {20_003 - KEPT_PER_FORM} more anomalies, all in {relay.spool.inbox / 'OUT'}" in story
    assert "anomalies: 20003 (by class: B=3, P=20000; most frequent: 00237-008=20000, 00237-001=3)" in story


def many_forms(forms: int, each: int) -> bytes:
    """A notification of ``forms`` refused Forms with ``each`` non-blocking anomalies, the last one blocking."""
    body = io.StringIO()
    body.write('<?xml version="1.0" encoding="UTF-8"?>\n<NOTIFICATION>')
    for w in range(forms):
        body.write(
            f"<Form><Identification>NOTI001</Identification><FileReference><FileName>{GO2}</FileName></FileReference>"
            f"<NaturalPerson><INSS>{w:011d}</INSS></NaturalPerson><HandlingResult><ResultCode>0</ResultCode>"
        )
        for i in range(each):
            cls = "B" if w == forms - 1 and i == each - 1 else "P"
            body.write(
                f"<AnomalyReport><ErrorID>00237-008</ErrorID><AnomalyClass>{cls}</AnomalyClass>"
                f"<Path><NaturalPerson>{i}</NaturalPerson></Path></AnomalyReport>"
            )
        body.write("</HandlingResult></Form>\n")
    body.write("</NOTIFICATION>\n")
    return body.getvalue().encode()


GO2 = f"GO.DIMN.{SENDER}.{TODAY}.00052.R.1"


def test_the_detail_of_a_notification_is_bounded_in_all_its_forms(relay: Relay, sshd: SshServer) -> None:
    """150 Forms of 20 anomalies: at most KEPT_IN_ALL kept in detail in all (the blocking one first), the rest
    counted; `status NAME` stays short; the rows a plain `status` reads carry no anomaly at all."""
    sent_set(relay, GO2, f"FI.DIMN.{SENDER}.{TODAY}.00052.R.1.1")
    out: Path = sshd.home / "OUT"
    put(out, f"FO.ACRF.999999.{TODAY}.C0001.R", acrf(GO2, ticket="0MANYFORMS001"))
    put(out, f"FO.NOTI.999999.{TODAY}.C0002.R", many_forms(150, 20))
    relay.poll_once()
    relay.results.catch_up()
    doc = json.loads((relay.spool.results / f"{GO2}.json").read_text())
    [note] = doc["notifications"]
    kept = [a for w in note["workers"] for a in w["anomalies"]]
    assert len(kept) == KEPT_IN_ALL and note["anomaly_count"] == 3000
    assert sum(a["blocking"] for a in kept) == 1  # the blocking one, in the 150th Form, is kept
    story = set_detail(relay.journal, GO2) or ""
    assert len(story.splitlines()) < 100 + KEPT_IN_ALL + 30, len(story.splitlines())
    assert f"… {3000 - KEPT_IN_ALL} more anomalies, all in" in story
    [light] = [r for r in relay.journal.recent_sets(10, light=True) if r.go_name == GO2]
    assert [n.workers for n in light.data.notifications] == [()] and light.data.notifications[0].outcome == "refused"
