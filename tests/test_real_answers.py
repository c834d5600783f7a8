"""Answers in the shapes the transfer point really sends (our own fixtures, written in the shapes of the public
ONSS examples and public payroll code): each through the parser, and through a full poll on the real sshd."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.responses.acrf import parse_acrfs
from onss_relay.responses.notification import parse_notification, summary
from tests.conftest import SENDER, TODAY
from tests.fixtures.sshd import SshServer

GO = f"GO.DMFA.{SENDER}.{TODAY}.00001.T.1"
FI = f"FI.DMFA.{SENDER}.{TODAY}.00001.T.1.1"
DIMONA_GO = f"GO.DIMN.{SENDER}.{TODAY}.00002.T.1"
TICKET = "0380579A83Q1Z"


def acrf(
    file_name: str,
    code: str = "1",
    type_form: str = "FA",
    errors: tuple[str, ...] = (),
    ticket: str = TICKET,
    xmlns: str = "",
) -> bytes:
    ids = "".join(f"<ErrorID>{e}</ErrorID>" for e in errors)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ACRF{xmlns} xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="ACRF_20262.xsd">
 <Form><Identification>ACRF001</Identification><FormCreationDate>2026-11-29</FormCreationDate>
  <FormCreationHour>10:00:00.000</FormCreationHour><AttestationStatus>0</AttestationStatus><TypeForm>{type_form}</TypeForm>
  <FileReference><FileName>{file_name}</FileName><ReferenceOrigin>1</ReferenceOrigin><ReferenceNbr>{ticket}</ReferenceNbr></FileReference>
  <ReceptionResult><ResultCode>{code}</ResultCode>{ids}</ReceptionResult></Form>
</ACRF>""".encode()


def form(
    inss: str, code: str, anomalies: str = "", diagnosis: str = "", reference: str = "", file_reference: str = ""
) -> str:
    diag = f"<Diagnosis>{diagnosis}</Diagnosis>" if diagnosis else ""
    return f"""<Form><Identification>NOTI001</Identification>
  <HandledOriginalForm><Identification>DIMN001</Identification></HandledOriginalForm>{file_reference}{reference}
  <EmployerId>{SENDER}</EmployerId><NaturalPerson><INSS>{inss}</INSS></NaturalPerson>
  <HandlingResult><ResultCode>{code}</ResultCode>{diag}{anomalies}</HandlingResult></Form>"""


def anomaly(error_id: str, cls: str, tag: str = "DimonaIn", value: str = "x") -> str:
    return (
        f"<AnomalyReport><ErrorID>{error_id}</ErrorID><TagName>{tag}</TagName><Value>{value}</Value>"
        f"<AnomalyClass>{cls}</AnomalyClass><AnomalyLabel>label of {error_id}</AnomalyLabel>"
        f"<Path><Employer>{SENDER}</Employer><NaturalPerson>2</NaturalPerson></Path></AnomalyReport>"
    )


def notification(*forms: str, encoding: str = "UTF-8", xmlns: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\r\n<NOTIFICATION{xmlns}>\r\n'
        + "\r\n".join(forms)
        + "\r\n</NOTIFICATION>\r\n"
    )


BY_FILE = f"<FileReference><FileName>{DIMONA_GO}</FileName><ReferenceNbr>0DIMONATICKET</ReferenceNbr></FileReference>"
TWO_WORKERS = notification(
    form("85073003328", "1", anomaly("00011-155", "W"), file_reference=BY_FILE),
    form("90042125519", "0", anomaly("90373-333", "B", "INSS", "90042125519"), diagnosis="3", file_reference=BY_FILE),
)


# -- through the parser -------------------------------------------------------------------------


def test_two_workers_one_refused_reads_as_such() -> None:
    n = parse_notification(TWO_WORKERS.encode())
    assert [(f.inss, f.outcome) for f in n.forms] == [("85073003328", "accepted"), ("90042125519", "refused")]
    assert not n.accepted
    assert summary(n) == "2 workers: 1 accepted, 1 refused (90373-333, blocking)"
    warning, blocking = n.forms[0].anomalies[0], n.forms[1].anomalies[0]
    assert not warning.blocking and blocking.blocking
    assert blocking.path == f"Employer={SENDER} / NaturalPerson=2"
    assert (blocking.tag_name, blocking.value, blocking.label) == ("INSS", "90042125519", "label of 90373-333")


def test_result_code_0_is_refused_with_its_diagnosis() -> None:
    n = parse_notification(notification(form("85073003328", "0", diagnosis="3")).encode())
    assert not n.accepted and summary(n) == "refused (diagnosis 3: refused: it holds blocking anomalies)"


@pytest.mark.parametrize(
    "encode",
    [
        lambda t: t.encode(),
        lambda t: codecs.BOM_UTF8 + t.encode(),
        lambda t: t.replace("UTF-8", "ISO-8859-1").replace("label of", "libellé de").encode("latin-1"),
        lambda t: t.replace("<NOTIFICATION>", '<NOTIFICATION xmlns="http://socialsecurity.be/noti">').encode(),
    ],
)
def test_encodings_and_a_default_namespace(encode) -> None:  # type: ignore[no-untyped-def]
    n = parse_notification(encode(TWO_WORKERS))
    assert len(n.forms) == 2 and n.forms[1].anomalies[0].error_id == "90373-333"


def test_employer_reference_is_not_a_ticket() -> None:
    own = "<Reference><ReferenceNbr>2025/1</ReferenceNbr><ReferenceOrigin>1</ReferenceOrigin></Reference>"
    onss = f"<Reference><ReferenceNbr>{TICKET}</ReferenceNbr><ReferenceOrigin>2</ReferenceOrigin></Reference>"
    assert parse_notification(notification(form("1", "1", reference=own)).encode()).first.tickets() == []
    assert parse_notification(notification(form("1", "1", reference=onss)).encode()).first.tickets() == [TICKET]


def test_acrf_provisional_and_final_and_fi_name() -> None:
    [pa] = parse_acrfs(__import__("io").BytesIO(acrf(FI, type_form="PA")))
    assert pa.file_name == FI and pa.accepted and not pa.final
    [fa] = parse_acrfs(__import__("io").BytesIO(acrf(GO, "0", errors=("ACRF-129", "ACRF-777"))))
    assert fa.final and not fa.accepted and fa.errors == ("ACRF-129", "ACRF-777")


# -- through a full poll on the real sshd -------------------------------------------------------


def sent_set(relay: Relay, go: str, fi: str) -> None:
    """A set as the uploader leaves it: its GO went out, nothing answered yet."""
    relay.journal.add_set(go, "T", [fi])
    for s in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
        relay.journal.transition(go, s)


def put(out: Path, name: str, content: bytes) -> None:
    (out / name).write_bytes(content)
    (out / ("GO" + name[2:])).write_bytes(b"")


@pytest.fixture
def relay(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(sftp_cfg)
    yield r
    r.close()


def test_refusal_naming_the_fi_reaches_its_set(relay: Relay, sshd: SshServer) -> None:
    sent_set(relay, GO, FI)
    put(sshd.home / "OUTTEST", f"FO.ACRF.999999.{TODAY}.24AZG.T", acrf(FI, "0", errors=("ACRF-129", "ACRF-777")))
    relay.poll_once()
    row = relay.journal.get_set(GO)
    assert row is not None and row.state == State.REFUSED and row.data.acrf is not None
    assert [(e.code, "not in our table" in e.description) for e in row.data.acrf.errors] == [
        ("ACRF-129", False),
        ("ACRF-777", True),
    ]
    assert list((sshd.home / "OUTTEST").iterdir()) == []


def test_provisional_accepted_then_final_refused(relay: Relay, sshd: SshServer) -> None:
    sent_set(relay, GO, FI)
    out = sshd.home / "OUTTEST"
    put(out, f"FO.ACRF.999999.{TODAY}.0000A.T", acrf(GO, "1", "PA"))
    relay.poll_once()
    assert relay.journal.get_set(GO).state == State.ACKNOWLEDGED  # type: ignore[union-attr]
    put(out, f"FO.ACRF.999999.{TODAY}.0000B.T", acrf(GO, "0", "FA", ("ACRF-125",)))
    relay.poll_once()
    put(out, f"FO.ACRF.999999.{TODAY}.0000C.T", acrf(GO, "1", "PA"))  # a late provisional one changes nothing
    relay.poll_once()
    row = relay.journal.get_set(GO)
    assert row is not None and row.state == State.REFUSED and row.data.acrf is not None and row.data.acrf.final
    assert [h[1] for h in relay.journal.history(GO)][-2:] == ["acknowledged", "refused"]
    assert relay.journal.history(GO)[-1][2] == "final ACRF: refused: ACRF-125: invalid signature"


def test_provisional_accepted_then_final_accepted_says_so(relay: Relay, sshd: SshServer) -> None:
    """Issue 23, review 2: a final ACRF agreeing with the provisional one changes no state; the history says
    it came (it said only "provisional ACRF: accepted")."""
    sent_set(relay, GO, FI)
    out = sshd.home / "OUTTEST"
    put(out, f"FO.ACRF.999999.{TODAY}.0000A.T", acrf(GO, "1", "PA"))
    relay.poll_once()
    put(out, f"FO.ACRF.999999.{TODAY}.0000B.T", acrf(GO, "1", "FA"))
    relay.poll_once()
    details = [h[2] for h in relay.journal.history(GO)]
    assert details[-2:] == ["provisional ACRF: accepted", "final ACRF: accepted"]


def test_notification_before_its_acrf_waits_then_links(relay: Relay, sshd: SshServer, sftp_cfg: Config) -> None:
    sent_set(relay, DIMONA_GO, f"FI.DIMN.{SENDER}.{TODAY}.00002.T.1.1")
    out = sshd.home / "OUTTEST"
    put(out, f"FO.NOTI.999999.{TODAY}.24AZG.T", TWO_WORKERS.encode())
    relay.poll_once()
    assert relay.journal.get_set(DIMONA_GO).state == State.SENT  # type: ignore[union-attr]
    relay.close()
    later = Relay(sftp_cfg)  # across a restart
    try:
        put(out, f"FO.ACRF.999999.{TODAY}.24AZH.T", acrf(DIMONA_GO, ticket="0DIMONATICKET"))
        later.poll_once()
        row = later.journal.get_set(DIMONA_GO)
        assert row is not None and row.state == State.NOTIFIED
        [note] = row.data.notifications
        assert note.summary == "2 workers: 1 accepted, 1 refused (90373-333, blocking)" and not note.accepted
        assert [w.outcome for w in note.workers] == ["accepted", "refused"]
    finally:
        later.close()


@pytest.mark.parametrize("app", ["BEWA", "PFAN", "IDFL"])
def test_answers_of_other_applications_are_mirrored_and_shown(relay: Relay, sshd: SshServer, app: str) -> None:
    name = f"FO.{app}.999999.{TODAY}.7Q2ZX.T"
    put(
        sshd.home / "OUTTEST",
        name,
        b"<?xml version='1.0'?><Notice><ReferenceNbr>0UNKNOWNTICKET</ReferenceNbr></Notice>",
    )
    put(sshd.home / "OUTTEST", f"FO.ACRF.999999.{TODAY}.7Q2ZY.T", acrf(f"GO.DMFA.{SENDER}.{TODAY}.09999.T.1"))
    relay.poll_once()
    assert (relay.spool.inbox / "OUTTEST" / name).exists() and list((sshd.home / "OUTTEST").iterdir()) == []
    unmatched = {r.name: r.kind for r in relay.journal.unmatched_responses()}
    assert unmatched == {name: "other-waiting", f"FO.ACRF.999999.{TODAY}.7Q2ZY.T": "acrf-unmatched"}


def test_a_large_notification_is_parsed_as_a_stream(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    with big.open("w") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<NOTIFICATION>\n')
        for i in range(20_000):
            f.write(form(f"{i:011d}", "1") + "\n")
        f.write("</NOTIFICATION>\n")
    with big.open("rb") as source:
        n = parse_notification(source)
    assert n.count == 20_000 and n.accepted and len(n.forms) == 100  # counted, a bounded few in detail


def test_waiting_sets_become_overdue_everywhere(relay: Relay, sftp_cfg: Config) -> None:
    import dataclasses
    import json

    from onss_relay.commands.status import status_json, status_table
    from onss_relay.metrics import HealthSnapshot, RelayCollector, registry_for

    sent_set(relay, GO, FI)
    assert relay.warn_overdue() == []
    # the sets waiting are read from the journal's index of overdue candidates, never all sets sent or acknowledged
    # (a year of answered circuit tests is acknowledged for ever: 696 MB read after each poll, review rev29)
    every_waiting_set = relay.journal.sets_in
    relay.journal.sets_in = lambda *states, **kw: (_ for _ in ()).throw(AssertionError(f"read all {states}"))  # type: ignore[method-assign]
    assert relay.warn_overdue() == []
    relay.journal.sets_in = every_waiting_set  # type: ignore[method-assign]
    relay.apply(dataclasses.replace(sftp_cfg, poll=dataclasses.replace(sftp_cfg.poll, acrf_overdue=0.0)))
    assert relay.warn_overdue() == [GO] and relay.warn_overdue() == []  # one warning per set
    poll = relay.cfg.poll
    assert "OVERDUE: no ACRF" in status_table(relay.journal, poll=poll)
    doc = status_json(relay.journal, poll=poll)
    [entry] = doc["sets"]
    assert entry["overdue"].startswith("no ACRF") and entry["since"] and entry["history"]
    json.dumps(doc)
    collector = RelayCollector(relay.journal, lambda: HealthSnapshot(True, "ok", ()), lambda: 30, lambda: poll)
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(collector)).decode()
    assert "onss_relay_overdue_sets 1.0" in text and "onss_relay_unlinked_responses 0.0" in text


# -- sequences per sender + date + environment, and the application-code table -------------------------


def test_a_sequence_is_used_once_per_sender_date_and_environment_whatever_the_code(relay_dir: Path) -> None:
    from onss_relay.pipeline import Relay
    from tests.conftest import fi_name

    cfg = load_config(relay_dir / "config.toml", environ={})
    relay = Relay(cfg)
    try:
        outbox = relay.spool.outbox
        (outbox / fi_name(1, app="DMFA")).write_bytes(b"<DmfA/>")
        relay.send_once(wait_for_settle=False)
        # the same sequence with another code, another part count, and two new sets sharing one in one scan
        (outbox / fi_name(1, app="DIMN")).write_bytes(b"<Dimona/>")
        for part in (1, 2):
            (outbox / fi_name(1, app="DMFA", total=2, part=part)).write_bytes(b"<DmfA/>")
        (outbox / fi_name(2, app="DIMN")).write_bytes(b"<Dimona/>")
        (outbox / fi_name(2, app="DMFA")).write_bytes(b"<DmfA/>")
        (outbox / fi_name(1, app="DIMN", env="S")).write_bytes(b"<Dimona/>")  # another environment: fine
        report = relay.send_once(wait_for_settle=False)
    finally:
        relay.close()
    assert len(report.upload.sent) == 2  # sequence 2 once, and sequence 1 in S
    reasons = {p.name: json.loads(p.read_text())["reason"] for p in cfg.paths.failed_dir.glob("*.reason.json")}
    assert set(reasons.values()) == {"sequence already used, would be ACRF-133"}
    assert len(reasons) == 4  # DIMN 00001, both parts of DMFA 00001 in two parts, one of the two 00002


def test_the_application_code_table_can_be_extended_from_the_configuration(relay_dir: Path) -> None:
    from tests.conftest import fi_name
    from tests.helpers import run_cli

    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / fi_name(1, app="ZZNW")).write_bytes(b"<New/>")
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 1 and "quarantined 1" in r.stdout
    assert "not a code senders send" in (cfg.paths.failed_dir / f"{fi_name(1, app='ZZNW')}.reason.json").read_text()
    env = {"ONSS_RELAY__WATCH__EXTRA_APPLICATION_CODES": '["ZZNW"]'}
    (cfg.paths.outbox_dir / fi_name(2, app="ZZNW")).write_bytes(b"<New/>")
    r = run_cli("send", "--once", "--config", str(config), env=env)
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    content = relay_dir / "new.xml"
    content.write_bytes(b"<New/>")
    assert run_cli("submit", str(content), "--app", "ZZNW", "--env", "T", "--config", str(config)).returncode == 2
    r = run_cli("submit", str(content), "--app", "ZZNW", "--env", "T", "--config", str(config), env=env)
    assert r.returncode == 0 and ".ZZNW." in r.stdout
    bad = run_cli("status", "--config", str(config), env={"ONSS_RELAY__WATCH__EXTRA_APPLICATION_CODES": '["abc"]'})
    assert bad.returncode == 2 and "watch.extra_application_codes" in bad.stderr


def test_submit_never_reuses_a_sequence_found_in_sent_after_the_journal_is_lost(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    content = relay_dir / "d.xml"
    content.write_bytes(b"<DmfA/>")
    first = run_cli("submit", str(content), "--app", "DMFA", "--env", "T", "--config", str(config)).stdout.split()
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    cfg.paths.journal_path.unlink()  # lost; sent/ kept
    again = run_cli("submit", str(content), "--app", "DIMN", "--env", "T", "--config", str(config)).stdout.split()
    assert first[0].split(".")[4] == "00001" and again[0].split(".")[4] == "00002", (first, again)


def test_a_waiting_notification_is_read_again_only_when_an_answer_may_have_freed_it(
    relay: Relay, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onss_relay.responses import notification

    reads: list[int] = []
    real = notification.parse_notification
    monkeypatch.setattr(notification, "parse_notification", lambda data: reads.append(1) or real(data))
    sent_set(relay, DIMONA_GO, f"FI.DIMN.{SENDER}.{TODAY}.00002.T.1.1")
    out = sshd.home / "OUTTEST"
    put(out, f"FO.NOTI.999999.{TODAY}.24AZG.T", TWO_WORKERS.encode())
    for _ in range(4):  # its ACRF does not come: a large notification must not be parsed at every poll
        relay.poll_once()
    assert len(reads) == 1
    put(out, f"FO.ACRF.999999.{TODAY}.24AZH.T", acrf(DIMONA_GO, ticket="0DIMONATICKET"))
    relay.poll_once()
    assert len(reads) == 2 and relay.journal.get_set(DIMONA_GO).state == State.NOTIFIED  # type: ignore[union-attr]
