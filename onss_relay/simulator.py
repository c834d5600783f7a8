"""A transfer-point simulator: on a directory standing for the remote home, answer every GO like the ONSS.

It checks the name grammar, sender, dates, folder/environment, duplicates, parts and signatures, consumes the
set, and writes an ACRF triple (FO + FS + GO) in the matching OUT folder, then a notification for accepted sets
(none for a DmfA in T: there it is only a circuit test).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
import string
from pathlib import Path
from xml.sax.saxutils import escape

import structlog
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from onss_relay import identity, signature
from onss_relay.errors import InvalidName, SignatureError
from onss_relay.names import (
    SET_LEVEL_PREFIXES,
    Env,
    Name,
    Prefix,
    circuit_test,
    env_of_upload_folder,
    format_name,
    fs_name_for,
    parse_name,
    part_names,
    response_folder,
    sent_application_codes,
)
from onss_relay.responses.codes import anomaly_class
from onss_relay.simulator_counters import AnswerCounters, AnsweredSets
from onss_relay.transport.local import LocalTransport, make_remote_home

log = structlog.get_logger(__name__)

ONSS_SENDER = "999999"
FOLDER_CODE = {Env.R: "ACRF-118", Env.T: "ACRF-119", Env.S: "ACRF-257"}
ANOMALY_MARKER = re.compile(
    rb"SIMULATE-ANOMALY:([0-9A-Z-]+):([A-Z]+)(?::([0-9]))?"
)  # in an FI: the notification reports it
SHAPE_MARKER = re.compile(
    rb"SIMULATE-(ACRF|NOTI):([A-Z-]+)"
)  # answer shapes: PROVISIONAL, REFUSE-FINAL, FI-NAME, FIRST
OTHER_MARKER = re.compile(rb"SIMULATE-OTHER:([A-Z0-9]{4})")  # also answer with another application's file
INSS = re.compile(rb"<INSS>([0-9]{11})</INSS>")


@dataclasses.dataclass(frozen=True)
class Verdict:
    go_name: str
    folder: str
    errors: tuple[str, ...]
    ticket: str
    anomalies: tuple[tuple[str, str, int], ...] = ()  # ErrorID, class, worker (1-based)
    workers: tuple[str, ...] = ()  # INSS numbers found in the declaration (one notification Form each)
    shape: frozenset[str] = frozenset()  # SIMULATE-ACRF / SIMULATE-NOTI markers: the answer shapes asked for
    others: tuple[str, ...] = ()  # application codes of other answers to write (SIMULATE-OTHER:BEWA)
    fi_names: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.errors


class Simulator:
    """Given a remote home directory and the account's sender number, answer declarations like the ONSS would."""

    def __init__(
        self,
        home: Path,
        sender: str,
        *,
        max_age_days: int = 60,
        trusted: list[Path] | None = None,
        today: dt.date | None = None,
    ) -> None:
        self.home = make_remote_home(home)
        self.sender = sender
        self.max_age_days = max_age_days
        self.today = today
        self.trusted = [p.read_bytes() for p in trusted or []]
        self.remote = LocalTransport(home)
        self._state_path = home / ".simulator.json"
        self._counters_path = home / ".simulator-counters.json"
        self._counters = AnswerCounters(self._counters_path, {})
        self._answered = AnsweredSets(home / ".simulator-answered")
        self._identity = identity.self_signed_identity(home / ".simulator-identity", "ONSS transfer point simulator")

    # -- state: names already processed (ACRF-133) and response sequence numbers ---------------

    def _load_state(self) -> dict[str, object]:
        try:
            state: dict[str, object] = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            state = {"seen": [], "seq": {}}
        state["seen"] = set(state["seen"])  # type: ignore[call-overload]  # looked up once per GO: a set
        for folder, go, names in self._answered.read():  # answered by a run killed before it saved its state
            state["seen"].add(go)  # type: ignore[attr-defined]
            for name in names:
                self.remote.delete(folder, name)
        self._counters = AnswerCounters(self._counters_path, state["seq"])  # type: ignore[arg-type]
        return state

    def _save_state(self, state: dict[str, object]) -> None:
        state["seq"] = dict(self._counters.used)
        # a name dated past max_age_days is refused by its date (ACRF-126) whether seen or not: forgotten, so the
        # names kept are a window of days, not every name ever answered (read and written at every pass)
        oldest = ((self.today or dt.date.today()) - dt.timedelta(days=self.max_age_days)).strftime("%Y%m%d")
        state["seen"] = {n for n in state["seen"] if _name_date(n) >= oldest}  # type: ignore[attr-defined]
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state | {"seen": sorted(state["seen"])}))  # type: ignore[call-overload]
        tmp.replace(self._state_path)
        self._counters.settle()
        self._answered.clear()

    # -- processing ---------------------------------------------------------------------------

    def process(self) -> list[Verdict]:
        """Answer every GO waiting in IN, INTEST and INTEST-S; return the verdicts in the order given."""
        verdicts: list[Verdict] = []
        for env in Env:  # an answer a killed run was writing: its temp (.FO….part) is its alone, never polled
            for temp in (self.home / response_folder(env)).glob(".[FG][OS].*.part"):
                temp.unlink(missing_ok=True)
        # the sets a killed run answered leave IN* first (_load_state), so that they are not listed as waiting
        state = self._load_state() if self._answered.path.exists() else None
        waiting = [
            (folder, entry.name)
            for folder in ("IN", "INTEST", "INTEST-S")
            for entry in self.remote.list(folder)
            if entry.kind == "file" and entry.name.startswith("GO.")
        ]
        if state is None:
            if not waiting:
                return verdicts  # an idle pass reads and writes no state
            state = self._load_state()
        for folder, go in waiting:
            verdict, files = self._judge(folder, go, state)
            self._answer(verdict, folder, state)
            self._answered.add(folder, go, files)  # answered: its files leave IN* once only
            for name in files:
                self.remote.delete(folder, name)
            verdicts.append(verdict)
        self._save_state(state)
        return verdicts

    def _judge(self, folder: str, go_raw: str, state: dict[str, object]) -> tuple[Verdict, list[str]]:
        """Given a GO in folder, return the verdict on its set and the files the transfer point takes away once
        it has answered (FI, FS and GO leave IN* soon after; never before the answer is written)."""
        ticket = new_ticket()
        try:
            go = parse_name(go_raw)
        except InvalidName as e:
            return Verdict(go_raw, folder, (e.acrf or "ACRF-107",), ticket), [go_raw]
        errors = self._name_errors(go, folder, state)
        fis = [p for p in part_names(go) if self.remote.exists(folder, format_name(p))]
        fss = [p for p in part_names(go, Prefix.FS) if self.remote.exists(folder, format_name(p))]
        if not errors:
            errors = self._content_errors(go, folder, fis, fss)
        markers = self._markers_in(folder, fis)
        seen = state["seen"]
        assert isinstance(seen, set)
        seen.add(go_raw)
        shape = frozenset(f"{k.decode()}-{v.decode()}".removeprefix("ACRF-") for k, v in markers[2])
        name = format_name(fis[0]) if "FI-NAME" in shape and fis else go_raw
        verdict = Verdict(
            name,
            folder,
            tuple(errors),
            ticket,
            () if errors else markers[0],
            markers[1],
            shape,
            tuple(markers[3]),
            tuple(format_name(f) for f in fis),
        )
        return verdict, [format_name(n) for n in [*fis, *fss, go]]

    def _markers_in(
        self, folder: str, fis: list[Name]
    ) -> tuple[tuple[tuple[str, str, int], ...], tuple[str, ...], list[tuple[bytes, bytes]], list[str]]:
        """Read the FI for what the answers should say: "SIMULATE-ANOMALY:<ErrorID>:<class>[:<worker>]",
        "SIMULATE-ACRF:<shape>", "SIMULATE-NOTI:FIRST", "SIMULATE-OTHER:<app>", and the workers' <INSS>."""
        anomalies: list[tuple[str, str, int]] = []
        workers: list[str] = []
        shapes: list[tuple[bytes, bytes]] = []
        others: list[str] = []
        for fi in fis:
            with (self.home / folder / format_name(fi)).open("rb") as f:
                for line in f:
                    anomalies += [(m[1].decode(), m[2].decode(), int(m[3] or 1)) for m in ANOMALY_MARKER.finditer(line)]
                    workers += [m[1].decode() for m in INSS.finditer(line)]
                    shapes += [(m[1], m[2]) for m in SHAPE_MARKER.finditer(line)]
                    others += [m[1].decode() for m in OTHER_MARKER.finditer(line)]
        return tuple(anomalies), tuple(dict.fromkeys(workers)), shapes, others

    def _name_errors(self, go: Name, folder: str, state: dict[str, object]) -> list[str]:
        today = self.today or dt.date.today()
        errors = []
        if go.prefix not in SET_LEVEL_PREFIXES:
            errors.append("ACRF-107")
        if go.app not in sent_application_codes():
            errors.append("ACRF-129")
        if go.sender != self.sender:
            errors.append("ACRF-108")
        if go.creation_date > today:
            errors.append("ACRF-111")
        elif (today - go.creation_date).days > self.max_age_days:
            errors.append("ACRF-126")
        if env_of_upload_folder(folder) != go.env:
            errors.append(FOLDER_CODE[go.env])
        if format_name(go) in state["seen"]:  # type: ignore[operator]
            errors.append("ACRF-133")
        return errors

    def _content_errors(self, go: Name, folder: str, fis: list[Name], fss: list[Name]) -> list[str]:
        expected = go.total or 1
        if len(fis) != expected:
            return ["ACRF-120"]
        # every send carries its signature, in every environment (seed 001; the transfer point has no S exception)
        if len(fss) != expected:
            return ["ACRF-122"]
        for fi in fis:
            local = self.home / folder / format_name(fi)
            if local.stat().st_size == 0:
                return ["ACRF-134"]
            fs = (self.home / folder / format_name(fs_name_for(fi))).read_bytes()
            try:
                signature.verify(local, fs)
            except SignatureError:
                return ["ACRF-125"]
            if self.trusted and not self._signed_by_trusted(fs):
                return ["ACRF-125"]
        return []

    def _signed_by_trusted(self, fs: bytes) -> bool:
        certs = cms.ContentInfo.load(signature.decode_fs(fs))["content"]["certificates"]
        trusted = {x509.load_pem_x509_certificate(t).public_bytes(Encoding.DER) for t in self.trusted}
        return any(c.chosen.dump() in trusted for c in certs)

    # -- answers ------------------------------------------------------------------------------

    def _answer(self, verdict: Verdict, folder: str, state: dict[str, object]) -> None:
        """Write the ACRF (a provisional one first when asked), then a notification for an accepted set."""
        env = env_of_upload_folder(folder) or Env.T
        shape = verdict.shape
        if "NOTI-FIRST" in shape and verdict.accepted and not self._circuit_test(verdict):
            self._notify(verdict, env, state)
        if "PROVISIONAL" in shape or "REFUSE-FINAL" in shape:
            self._write_response("ACRF", env, acrf_xml(dataclasses.replace(verdict, errors=()), "PA"), state)
        final = dataclasses.replace(verdict, errors=("ACRF-999",)) if "REFUSE-FINAL" in shape else verdict
        self._write_response("ACRF", env, acrf_xml(final), state)
        log.info("simulator_acrf", set=verdict.go_name, accepted=final.accepted, errors=list(final.errors))
        if final.accepted and "NOTI-FIRST" not in shape and not self._circuit_test(verdict):
            self._notify(verdict, env, state)
        for app in verdict.others:
            self._write_response(app, env, other_answer_xml(app, verdict.ticket), state)

    @staticmethod
    def _circuit_test(verdict: Verdict) -> bool:
        """A DmfA in T is only a circuit test (ONSS documents): the transfer is checked and acknowledged, the
        declaration is not handled, so no notification follows."""
        try:
            return circuit_test(parse_name(verdict.go_name))
        except InvalidName:
            return False

    def _notify(self, verdict: Verdict, env: Env, state: dict[str, object]) -> None:
        noti = notification_xml(
            verdict.ticket,
            self.sender,
            _original_form(verdict.go_name),
            verdict.anomalies,
            file_name=verdict.go_name,
            workers=verdict.workers,
        )
        self._write_response("NOTI", env, noti, state)

    def _write_response(self, app: str, env: Env, content: bytes, state: dict[str, object]) -> Name:
        today = (self.today or dt.date.today()).strftime("%Y%m%d")
        folder = response_folder(env)
        while True:  # never over an answer already there (a copy of the state restored from a backup)
            fo = Name(Prefix.FO, app, ONSS_SENDER, today, response_sequence(self._counters.next(f"{today}.{env}")), env)
            taken = [
                p
                for p in (Prefix.FO, Prefix.FS, Prefix.GO)
                if self.remote.exists(folder, format_name(fo.with_prefix(p)))
            ]
            if not taken:
                break
            log.warning("simulator_answer_name_taken", file=format_name(fo))
        self.remote.put_bytes(content, folder, format_name(fo))
        fs = signature.encode_fs(signature.sign_file(self._identity, self.home / folder / format_name(fo)))
        self.remote.put_bytes(fs, folder, format_name(fo.with_prefix(Prefix.FS)))
        self.remote.put_bytes(b"", folder, format_name(fo.with_prefix(Prefix.GO)))
        return fo


SEQUENCE_ALPHABET = string.digits + string.ascii_uppercase


def _name_date(name: str) -> str:
    """Given a GO name, return its creation date field (YYYYMMDD), or "" when it has none."""
    fields = name.split(".")
    return fields[3] if len(fields) > 3 and len(fields[3]) == 8 and fields[3].isdigit() else ""


def response_sequence(n: int) -> str:
    """Given the n-th answer of a day (from 1), return its 5-character sequence: n in base 36 over 0-9A-Z, the
    alphabet the transfer point uses (the ONSS help pages show FO.NOTI.999999.20140628.24AZG.R), so a day holds
    60,466,175 answers and every name keeps the grammar."""
    if not 0 < n < len(SEQUENCE_ALPHABET) ** 5:
        raise ValueError(f"answer number {n} of one day does not fit 5 characters of 0-9A-Z")
    digits = ""
    while n:
        n, d = divmod(n, len(SEQUENCE_ALPHABET))
        digits = SEQUENCE_ALPHABET[d] + digits
    return digits.rjust(5, "0")


def new_ticket() -> str:
    """Return a 13-character ticket like the ONSS's ReferenceNbr (e.g. 0380579A83Q1Z)."""
    return "0" + "".join(secrets.choice(SEQUENCE_ALPHABET) for _ in range(12))


def _original_form(go_name: str) -> str:
    fields = go_name.split(".")
    return f"{fields[1]}001" if len(fields) > 1 else "UNKNOWN"


def _now() -> tuple[str, str]:
    now = dt.datetime.now()
    return now.strftime("%Y-%m-%d"), now.strftime("%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def acrf_xml(verdict: Verdict, type_form: str = "FA") -> bytes:
    """Given a verdict, return the ACRF XML the transfer point would write (PA provisional, FA final)."""
    date, hour = _now()
    errors = "".join(f"\n      <ErrorID>{escape(c)}</ErrorID>" for c in verdict.errors)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ACRF xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="ACRF_20262.xsd">
  <Form>
    <Identification>ACRF001</Identification>
    <FormCreationDate>{date}</FormCreationDate>
    <FormCreationHour>{hour}</FormCreationHour>
    <AttestationStatus>0</AttestationStatus>
    <TypeForm>{type_form}</TypeForm>
    <FileReference>
      <FileName>{escape(verdict.go_name)}</FileName>
      <ReferenceOrigin>1</ReferenceOrigin>
      <ReferenceNbr>{verdict.ticket}</ReferenceNbr>
    </FileReference>
    <ReceptionResult>
      <ResultCode>{0 if verdict.errors else 1}</ResultCode>{errors}
    </ReceptionResult>
  </Form>
</ACRF>
""".encode()


def _anomaly_xml(error_id: str, cls: str, worker: int) -> str:
    return (
        f"\n      <AnomalyReport>\n        <ErrorID>{escape(error_id)}</ErrorID>\n        <TagName>INSS</TagName>"
        f"\n        <Value>worker {worker}</Value>\n        <AnomalyClass>{escape(cls)}</AnomalyClass>"
        f"\n        <AnomalyLabel>simulated anomaly {escape(error_id)}</AnomalyLabel>"
        f"\n        <Path><Employer>1</Employer><NaturalPerson>{worker}</NaturalPerson></Path>\n      </AnomalyReport>"
    )


def notification_xml(
    ticket: str,
    employer: str,
    original_form: str,
    anomalies: tuple[tuple[str, str, int], ...] = (),
    *,
    file_name: str = "",
    workers: tuple[str, ...] = (),
) -> bytes:
    """Given the ACRF ticket and anomalies (ErrorID, class, worker), return a NOTIFICATION with CRLF line ends:
    one Form per worker (a Dimona names several), each with its own result and anomalies."""
    date, hour = _now()
    forms = []
    for i, inss in enumerate(workers or ("",), start=1):
        mine = [(e, c) for e, c, w in anomalies if w == i or not workers]
        blocking = any(anomaly_class(c).blocking for _, c in mine)
        reports = "".join(_anomaly_xml(e, c, i) for e, c in mine)
        person = f"\n    <NaturalPerson>\n      <INSS>{inss}</INSS>\n    </NaturalPerson>" if inss else ""
        diagnosis = "\n      <Diagnosis>3</Diagnosis>" if blocking else ""
        forms.append(f"""  <Form>
    <Identification>NOTI001</Identification>
    <FormCreationDate>{date}</FormCreationDate>
    <FormCreationHour>{hour}</FormCreationHour>
    <AttestationStatus>0</AttestationStatus>
    <TypeForm>SU</TypeForm>
    <HandledOriginalForm>
      <Identification>{escape(original_form)}</Identification>
      <FormCreationDate>{date}</FormCreationDate>
      <FormCreationHour>{hour}</FormCreationHour>
    </HandledOriginalForm>
    <FileReference>
      <FileName>{escape(file_name)}</FileName>
      <ReferenceNbr>{ticket}</ReferenceNbr>
    </FileReference>
    <Reference>
      <ReferenceType>1</ReferenceType>
      <ReferenceNbr>{ticket}</ReferenceNbr>
      <ReferenceOrigin>2</ReferenceOrigin>
    </Reference>
    <EmployerId>{escape(employer)}</EmployerId>
    <HandledReference>
      <ReferenceType>2</ReferenceType>
      <ReferenceNbr>DOS{ticket[1:]}</ReferenceNbr>
      <ReferenceOrigin>2</ReferenceOrigin>
    </HandledReference>{person}
    <HandlingResult>
      <ResultCode>{0 if blocking else 1}</ResultCode>{diagnosis}{reports}
    </HandlingResult>
  </Form>
""")
    text = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<NOTIFICATION xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xsi:noNamespaceSchemaLocation="NOTI_20262.xsd">\n' + "".join(forms) + "</NOTIFICATION>\n"
    )
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def other_answer_xml(app: str, ticket: str) -> bytes:
    """Given an application code and the ticket of what it concerns, return an answer of another kind."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<{app}Notice>
  <Reference><ReferenceNbr>{ticket}</ReferenceNbr><ReferenceOrigin>2</ReferenceOrigin></Reference>
  <Text>Simulated {app} answer (caf\xe9)</Text>
</{app}Notice>
""".encode("latin-1")
