"""Every name a declaration is given finds it (issue 23 item 2): its GO/FI name, the ACRF's ticket, a
notification's file ticket, the declaration's own ticket (HandledReference, named by later answers in a
Reference of type 3, origin 2), the HandledOriginalForm recorded from its FI at claim, and the sender's own
reference when unique. Through a full poll on the real sshd; our own fixtures in the ONSS's published shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onss_relay.commands.status import set_detail
from onss_relay.config import Config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from tests.conftest import SENDER, TODAY, fi_name
from tests.fixtures.sshd import SshServer
from tests.test_real_answers import acrf, put, sent_set

GO = f"GO.DMFA.{SENDER}.{TODAY}.00011.T.1"
FI = f"FI.DMFA.{SENDER}.{TODAY}.00011.T.1.1"
ACRF_TICKET, FILE_TICKET, OWN_TICKET = "0ACRFTICKET01", "0FILETICKET01", "0OWNTICKET001"


def reference(nbr: str, origin: str = "2", type_: str = "3") -> str:
    return (
        f"<Reference><ReferenceType>{type_}</ReferenceType><ReferenceOrigin>{origin}</ReferenceOrigin>"
        f"<ReferenceNbr>{nbr}</ReferenceNbr></Reference>"
    )


def noti(
    code: str = "1",
    file_reference: str = "",
    handled: str = "",
    original: tuple[str, str, str] | None = None,
    references: str = "",
) -> bytes:
    orig = (
        "<HandledOriginalForm><Identification>{}</Identification><FormCreationDate>{}</FormCreationDate>"
        "<FormCreationHour>{}</FormCreationHour></HandledOriginalForm>".format(*original)
        if original
        else ""
    )
    own = f"<HandledReference><ReferenceType>1</ReferenceType><ReferenceOrigin>2</ReferenceOrigin><ReferenceNbr>{handled}</ReferenceNbr></HandledReference>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<NOTIFICATION><Form><Identification>NOTI001</Identification><FormCreationDate>{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}</FormCreationDate>
 <FormCreationHour>11:00:00.000</FormCreationHour><TypeForm>FA</TypeForm>{orig}{file_reference}{references}
 <EmployerId>{SENDER}</EmployerId>{own if handled else ""}
 <HandlingResult><ResultCode>{code}</ResultCode></HandlingResult></Form></NOTIFICATION>""".encode()


def dmfa_update(ticket: str) -> bytes:
    """A DmfA update notification: the ONSS changed the declaration; it names it by its own ticket."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<DmfAUpdateNotification><Form><Identification>DMNO001</Identification><TypeForm>SU</TypeForm>
 {reference("0UPDATETICKET", type_="1")}{reference(ticket)}<EmployerId>{SENDER}</EmployerId>
 <Quarter>20264</Quarter></Form></DmfAUpdateNotification>""".encode()


def dmfapid(ticket: str) -> bytes:
    return f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<DmfAPID><Form><Identification>DMPID01</Identification>{reference(ticket)}<Quarter>20264</Quarter></Form></DmfAPID>""".encode(
        "latin-1"
    )


@pytest.fixture
def relay(sftp_cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(sftp_cfg)
    yield r
    r.close()


def file_reference(name: str, ticket: str) -> str:
    return f"<FileReference><FileName>{name}</FileName><ReferenceNbr>{ticket}</ReferenceNbr></FileReference>"


def test_every_ticket_a_declaration_is_given_finds_it(relay: Relay, sshd: SshServer, sftp_cfg: Config) -> None:
    sent_set(relay, GO, FI)
    out = sshd.home / "OUTTEST"
    put(out, f"FO.ACRF.999999.{TODAY}.L0001.T", acrf(GO, ticket=ACRF_TICKET))
    put(out, f"FO.NOTI.999999.{TODAY}.L0002.T", noti("1", file_reference(GO, FILE_TICKET), OWN_TICKET))
    relay.poll_once()
    put(out, f"FO.DMNO.999999.{TODAY}.L0003.T", dmfa_update(OWN_TICKET))  # the declaration's own ticket
    put(out, f"FO.DMPI.999999.{TODAY}.L0004.T", dmfapid(FILE_TICKET))  # the notification's file ticket
    relay.poll_once()
    row = relay.journal.get_set(GO)
    assert row is not None and row.state == State.NOTIFIED
    assert [a.name for a in row.data.answers] == [
        f"FO.DMNO.999999.{TODAY}.L0003.T",
        f"FO.DMPI.999999.{TODAY}.L0004.T",
    ]
    assert relay.journal.unmatched_responses() == []
    story = set_detail(relay.journal, GO) or ""
    assert f"tickets:     {ACRF_TICKET}, {FILE_TICKET}, {OWN_TICKET}" in story
    dmno = f"DmfA update notification FO.DMNO.999999.{TODAY}.L0003.T about ticket {OWN_TICKET}, quarter 20264"
    assert f"answer:      {dmno}" in story and "declaration_answer" not in story
    assert story.count(dmno) == 2  # its line, and its note in the set's history
    relay.results.catch_up()
    doc = json.loads((relay.spool.results / f"{GO}.json").read_text())
    assert doc["tickets"] == [ACRF_TICKET, FILE_TICKET, OWN_TICKET]
    assert [(a["type"], a["declaration_ticket"]) for a in doc["answers"]] == [
        ("DmfAUpdateNotification", OWN_TICKET),
        ("DmfAPID", FILE_TICKET),
    ]
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    assert "later answers about the declaration (DmfA update notifications, DmfAPID …: `answers`" in readme


def test_an_answer_before_the_one_that_gives_its_ticket_links_after_a_restart(
    relay: Relay, sshd: SshServer, sftp_cfg: Config
) -> None:
    sent_set(relay, GO, FI)
    out = sshd.home / "OUTTEST"
    put(out, f"FO.ACRF.999999.{TODAY}.L0001.T", acrf(GO, ticket=ACRF_TICKET))
    put(out, f"FO.DMNO.999999.{TODAY}.L0003.T", dmfa_update(OWN_TICKET))  # before the notification naming it
    relay.poll_once()
    assert relay.journal.get_set(GO).data.answers == ()  # type: ignore[union-attr]
    relay.close()
    later = Relay(sftp_cfg)
    try:
        put(out, f"FO.NOTI.999999.{TODAY}.L0002.T", noti("1", file_reference(GO, FILE_TICKET), OWN_TICKET))
        later.poll_once()
        row = later.journal.get_set(GO)
        assert row is not None and row.state == State.NOTIFIED and len(row.data.answers) == 1
        assert later.journal.unmatched_responses() == []
    finally:
        later.close()


def fi_with(identification: str, hour: str, sender_ref: str) -> bytes:
    """An FI whose first Form has a head (Identification, creation date and hour, the sender's reference) and a
    body the notification never names."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<DIMONA><Form><Identification>{identification}</Identification><FormCreationDate>2026-11-30</FormCreationDate>
 <FormCreationHour>{hour}</FormCreationHour><AttestationStatus>0</AttestationStatus><TypeForm>SU</TypeForm>
 {reference(sender_ref, origin="1", type_="1")}
 <DimonaIn><StartingDate>2026-12-01</StartingDate><NaturalPerson><INSS>85073003328</INSS></NaturalPerson></DimonaIn>
</Form></DIMONA>""".encode()


def claimed_and_acknowledged(relay: Relay, sshd: SshServer, files: dict[int, bytes]) -> dict[int, str]:
    """Drop FIs (sequence → content), send them to the real sshd, answer each with an accepted ACRF."""
    for seq, content in files.items():
        (relay.spool.outbox / fi_name(seq)).write_bytes(content)
    relay.send_once(wait_for_settle=False)
    gos = {seq: f"GO.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1" for seq in files}
    for seq, go in gos.items():
        put(sshd.home / "OUTTEST", f"FO.ACRF.999999.{TODAY}.A{seq:04d}.T", acrf(go, ticket=f"0ACRF{seq:08d}"))
    relay.poll_once()
    assert all(relay.journal.get_set(g).state == State.ACKNOWLEDGED for g in gos.values())  # type: ignore[union-attr]
    return gos


def test_a_notification_without_file_reference_links_by_its_handled_original_form(
    relay: Relay, sshd: SshServer
) -> None:
    gos = claimed_and_acknowledged(
        relay, sshd, {21: fi_with("DIMONA", "09:00:00.000", "REF-A"), 22: fi_with("DIMONA", "09:00:01.000", "REF-A")}
    )
    answer = noti("0", original=("DIMONA", "2026-11-30", "09:00:01.000"), references=reference("REF-A", "1", "1"))
    put(sshd.home / "OUTTEST", f"FO.NOTI.999999.{TODAY}.N0001.T", answer)
    relay.poll_once()
    assert relay.journal.get_set(gos[22]).state == State.NOTIFIED  # type: ignore[union-attr]
    assert relay.journal.get_set(gos[21]).state == State.ACKNOWLEDGED  # type: ignore[union-attr]


def dimona_of_forms(*hours: str) -> bytes:
    """A Dimona FI of several Forms (one per worker), each with its own creation hour and a body."""
    forms = "".join(
        f"""<Form><Identification>DIMONA</Identification><FormCreationDate>2026-11-30</FormCreationDate>
 <FormCreationHour>{hour}</FormCreationHour><AttestationStatus>0</AttestationStatus><TypeForm>SU</TypeForm>
 <DimonaIn><StartingDate>2026-12-01</StartingDate><NaturalPerson><INSS>8507300{i:04d}</INSS></NaturalPerson>
 </DimonaIn></Form>"""
        for i, hour in enumerate(hours)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<DIMONA>{forms}</DIMONA>'.encode()


def test_a_notification_naming_the_second_form_of_a_multi_form_dimona_links(relay: Relay, sshd: SshServer) -> None:
    """A Dimona of three Forms is answered Form by Form: the notification of its second worker, without a
    FileReference, names that Form as its HandledOriginalForm and reaches the set (another set's first Form
    has the same identification and date, another hour)."""
    gos = claimed_and_acknowledged(
        relay,
        sshd,
        {41: dimona_of_forms("10:00:00.000", "10:00:00.001", "10:00:00.002"), 42: dimona_of_forms("10:00:01.000")},
    )
    answer = noti("1", original=("DIMONA", "2026-11-30", "10:00:00.001"))
    put(sshd.home / "OUTTEST", f"FO.NOTI.999999.{TODAY}.N0041.T", answer)
    relay.poll_once()
    assert relay.journal.get_set(gos[41]).state == State.NOTIFIED  # type: ignore[union-attr]
    assert relay.journal.get_set(gos[42]).state == State.ACKNOWLEDGED  # type: ignore[union-attr]
    assert relay.journal.unmatched_responses() == []
    relay.results.catch_up()
    result = json.loads((relay.spool.results / f"{gos[41]}.json").read_text())
    assert result["original_form_count"] == 3 and result["original_forms"][1] == "DIMONA|2026-11-30|10:00:00.001"


def test_the_senders_own_reference_links_only_when_one_set_has_it(relay: Relay, sshd: SshServer) -> None:
    gos = claimed_and_acknowledged(
        relay,
        sshd,
        {
            31: fi_with("DIMONA", "09:00:00.000", "2026/SHARED"),
            32: fi_with("DIMONA", "09:00:01.000", "2026/SHARED"),
            33: fi_with("DIMONA", "09:00:02.000", "2026/ONLY-33"),
        },
    )
    out = sshd.home / "OUTTEST"
    put(out, f"FO.NOTI.999999.{TODAY}.N0031.T", noti("1", references=reference("2026/SHARED", "1", "1")))
    put(out, f"FO.NOTI.999999.{TODAY}.N0033.T", noti("1", references=reference("2026/ONLY-33", "1", "1")))
    relay.poll_once()
    states = {seq: relay.journal.get_set(go).state for seq, go in gos.items()}  # type: ignore[union-attr]
    assert states == {31: State.ACKNOWLEDGED, 32: State.ACKNOWLEDGED, 33: State.NOTIFIED}
    assert [r.name for r in relay.journal.unmatched_responses()] == [f"FO.NOTI.999999.{TODAY}.N0031.T"]


def test_answers_that_match_no_set_tell_what_they_name(relay: Relay, sshd: SshServer, sftp_cfg: Config) -> None:
    from tests.helpers import run_cli

    out = sshd.home / "OUTTEST"
    stranger = f"GO.DMFA.{SENDER}.{TODAY}.09998.T.1"  # sent by another tool
    put(out, f"FO.ACRF.999999.{TODAY}.U0001.T", acrf(stranger, "0", errors=("ACRF-125",), ticket="0STRANGER0001"))
    put(out, f"FO.NOTI.999999.{TODAY}.U0002.T", noti("0", file_reference(stranger, "0STRANGER0002"), "0STRANGEROWN1"))
    put(out, f"FO.DMNO.999999.{TODAY}.U0003.T", dmfa_update("0STRANGEROWN1"))
    relay.poll_once()
    table = run_cli("status", "--config", str(sftp_cfg.source)).stdout
    assert f"names FileName {stranger}; tickets 0STRANGER0001; result 0 (not OK: refused); ACRF-125: invalid" in table
    assert f"names FileName {stranger}; tickets 0STRANGER0002, 0STRANGEROWN1; result 0 (not OK: refused)" in table
    assert "names no FileName; tickets 0STRANGEROWN1, 0UPDATETICKET" in table
    doc = json.loads(run_cli("status", "--json", "--config", str(sftp_cfg.source)).stdout)
    named = {r["name"]: r["names"] for r in doc["unlinked_responses"]}
    assert named[f"FO.ACRF.999999.{TODAY}.U0001.T"].startswith(f"names FileName {stranger}; tickets 0STRANGER0001")


def test_an_idflux_naming_the_declarations_own_ticket_is_linked(relay: Relay, sshd: SshServer) -> None:
    sent_set(relay, GO, FI)
    out = sshd.home / "OUTTEST"
    put(out, f"FO.ACRF.999999.{TODAY}.L0001.T", acrf(GO, ticket=ACRF_TICKET))
    put(out, f"FO.NOTI.999999.{TODAY}.L0002.T", noti("1", file_reference(GO, FILE_TICKET), OWN_TICKET))
    idflux = f"""<?xml version="1.0" encoding="UTF-8"?><IDFLUX><Form><Identification>IDFL001</Identification>
 {reference("0IDFLUXTICKET", type_="1")}{reference(OWN_TICKET)}<INSS>85073003328</INSS></Form></IDFLUX>"""
    put(out, f"FO.IDFL.999999.{TODAY}.L0005.T", idflux.encode())  # an identification change about its worker
    relay.poll_once()
    row = relay.journal.get_set(GO)
    assert row is not None and [p.rsplit("/", 1)[-1] for p in row.data.other_responses] == [
        f"FO.IDFL.999999.{TODAY}.L0005.T"
    ]
    assert relay.journal.unmatched_responses() == []


def test_a_resubmitted_fi_links_to_the_set_not_refused_and_an_ambiguous_answer_names_its_candidates(
    relay: Relay, sshd: SshServer, sftp_cfg: Config
) -> None:
    """The same FI sent again after its ACRF refused it: the answer without FileReference is for the one the
    ACRF took. Two sets still sharing it: the answer waits, its line naming both and what it carries."""
    from tests.helpers import run_cli

    first, again = fi_with("DIMONA", "09:10:00.000", "REF-R"), fi_with("DIMONA", "09:20:00.000", "REF-D")
    for seq, content in {41: first, 42: first, 43: again, 44: again}.items():
        (relay.spool.outbox / fi_name(seq)).write_bytes(content)
    relay.send_once(wait_for_settle=False)
    gos = {seq: f"GO.DIMN.{SENDER}.{TODAY}.{seq:05d}.T.1" for seq in (41, 42, 43, 44)}
    out = sshd.home / "OUTTEST"
    for seq, go in gos.items():
        code = "0" if seq == 41 else "1"
        put(out, f"FO.ACRF.999999.{TODAY}.A{seq:04d}.T", acrf(go, code, errors=("ACRF-125",) * (seq == 41)))
    relay.poll_once()
    assert relay.journal.get_set(gos[41]).state == State.REFUSED  # type: ignore[union-attr]
    put(out, f"FO.NOTI.999999.{TODAY}.N0041.T", noti("1", original=("DIMONA", "2026-11-30", "09:10:00.000")))
    put(
        out,
        f"FO.NOTI.999999.{TODAY}.N0043.T",
        noti("1", original=("DIMONA", "2026-11-30", "09:20:00.000"), references=reference("REF-D", "1", "1")),
    )
    relay.poll_once()
    assert relay.journal.get_set(gos[42]).state == State.NOTIFIED  # type: ignore[union-attr]
    assert [r.name for r in relay.journal.unmatched_responses()] == [f"FO.NOTI.999999.{TODAY}.N0043.T"]
    table = run_cli("status", "--config", str(sftp_cfg.source)).stdout
    assert "HandledOriginalForm DIMONA|2026-11-30|09:20:00.000; sender reference REF-D" in table
    assert f"ambiguous: it may answer any of {gos[43]}, {gos[44]}" in table


def test_the_same_fi_sent_to_t_and_to_r_is_answered_in_its_own_environment(relay: Relay, sshd: SshServer) -> None:
    """The same FI sent to T and to R: a notification without FileReference in OUT answers the R set."""
    content = fi_with("DIMONA", "09:30:00.000", "REF-TR")
    (relay.spool.outbox / fi_name(48)).write_bytes(content)
    (relay.spool.outbox / fi_name(49, env="R")).write_bytes(content)
    relay.send_once(wait_for_settle=False)
    test_go, prod_go = f"GO.DIMN.{SENDER}.{TODAY}.00048.T.1", f"GO.DIMN.{SENDER}.{TODAY}.00049.R.1"
    put(sshd.home / "OUTTEST", f"FO.ACRF.999999.{TODAY}.A0048.T", acrf(test_go))
    put(sshd.home / "OUT", f"FO.ACRF.999999.{TODAY}.A0049.R", acrf(prod_go))
    relay.poll_once()
    put(
        sshd.home / "OUT",
        f"FO.NOTI.999999.{TODAY}.N0049.R",
        noti("1", original=("DIMONA", "2026-11-30", "09:30:00.000")),
    )
    relay.poll_once()
    assert relay.journal.get_set(prod_go).state == State.NOTIFIED  # type: ignore[union-attr]
    assert relay.journal.get_set(test_go).state == State.ACKNOWLEDGED  # type: ignore[union-attr]
