"""A transfer-point simulator: on a directory standing for the remote home, answer every GO like the ONSS.

It checks the name grammar, sender, dates, folder/environment, duplicates, parts and signatures, consumes the
set, and writes an ACRF triple (FO + FS + GO) in the matching OUT folder, then a notification for accepted sets.
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
    env_of_upload_folder,
    format_name,
    fs_name_for,
    parse_name,
    part_names,
    response_folder,
)
from onss_relay.transport.local import LocalTransport, make_remote_home

log = structlog.get_logger(__name__)

ONSS_SENDER = "999999"
FOLDER_CODE = {Env.R: "ACRF-118", Env.T: "ACRF-119", Env.S: "ACRF-257"}
ANOMALY_MARKER = re.compile(rb"SIMULATE-ANOMALY:([0-9A-Z-]+):([A-Z]+)")  # in an FI: the notification reports it


@dataclasses.dataclass(frozen=True)
class Verdict:
    go_name: str
    folder: str
    errors: tuple[str, ...]
    ticket: str
    anomalies: tuple[tuple[str, str], ...] = ()

    @property
    def accepted(self) -> bool:
        return not self.errors


class Simulator:
    """Given a remote home directory and the account's sender number, answer declarations like the ONSS would."""

    def __init__(self, home: Path, sender: str, *, fs_expected_for_s: bool = False, max_age_days: int = 60,
                 trusted: list[Path] | None = None, today: dt.date | None = None) -> None:
        self.home = make_remote_home(home)
        self.sender = sender
        self.fs_expected_for_s = fs_expected_for_s
        self.max_age_days = max_age_days
        self.today = today
        self.trusted = [p.read_bytes() for p in trusted or []]
        self.remote = LocalTransport(home)
        self._state_path = home / ".simulator.json"
        self._identity = identity.self_signed_identity(home / ".simulator-identity", "ONSS transfer point simulator")

    # -- state: names already processed (ACRF-133) and response sequence numbers ---------------

    def _load_state(self) -> dict[str, object]:
        try:
            state: dict[str, object] = json.loads(self._state_path.read_text())
            return state
        except FileNotFoundError:
            return {"seen": [], "seq": {}}

    def _save_state(self, state: dict[str, object]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_path)

    # -- processing ---------------------------------------------------------------------------

    def process(self) -> list[Verdict]:
        """Answer every GO waiting in IN, INTEST and INTEST-S; return the verdicts in the order given."""
        verdicts = []
        state = self._load_state()
        for folder in ("IN", "INTEST", "INTEST-S"):
            for entry in self.remote.list(folder):
                if entry.kind == "file" and entry.name.startswith("GO."):
                    verdict = self._judge(folder, entry.name, state)
                    self._answer(verdict, folder, state)
                    verdicts.append(verdict)
        self._save_state(state)
        return verdicts

    def _judge(self, folder: str, go_raw: str, state: dict[str, object]) -> Verdict:
        ticket = new_ticket()
        try:
            go = parse_name(go_raw)
        except InvalidName as e:
            self.remote.delete(folder, go_raw)
            return Verdict(go_raw, folder, (e.acrf or "ACRF-107",), ticket)
        errors = self._name_errors(go, folder, state)
        fis = [p for p in part_names(go) if self.remote.exists(folder, format_name(p))]
        fss = [p for p in part_names(go, Prefix.FS) if self.remote.exists(folder, format_name(p))]
        if not errors:
            errors = self._content_errors(go, folder, fis, fss)
        anomalies = () if errors else self._anomalies_in(folder, fis)
        seen = state["seen"]
        assert isinstance(seen, list)
        seen.append(go_raw)
        self._consume(folder, go, fis, fss)
        return Verdict(go_raw, folder, tuple(errors), ticket, anomalies)

    def _anomalies_in(self, folder: str, fis: list[Name]) -> tuple[tuple[str, str], ...]:
        """Lines "SIMULATE-ANOMALY:<ErrorID>:<class>" in an FI make the notification report that anomaly."""
        found = []
        for fi in fis:
            with (self.home / folder / format_name(fi)).open("rb") as f:
                found += [(m[1].decode(), m[2].decode()) for line in f for m in ANOMALY_MARKER.finditer(line)]
        return tuple(found)

    def _name_errors(self, go: Name, folder: str, state: dict[str, object]) -> list[str]:
        today = self.today or dt.date.today()
        errors = []
        if go.prefix not in SET_LEVEL_PREFIXES:
            errors.append("ACRF-107")
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
        wants_fs = go.env != Env.S or self.fs_expected_for_s
        if not wants_fs:
            return ["ACRF-121"] if fss else []
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

    def _consume(self, folder: str, go: Name, fis: list[Name], fss: list[Name]) -> None:
        """The transfer point takes a set away soon after its GO: FI, FS and GO disappear from IN*."""
        for n in [*fis, *fss, go]:
            self.remote.delete(folder, format_name(n))

    # -- answers ------------------------------------------------------------------------------

    def _answer(self, verdict: Verdict, folder: str, state: dict[str, object]) -> None:
        env = env_of_upload_folder(folder) or Env.T
        self._write_response("ACRF", env, acrf_xml(verdict), state)
        log.info("simulator_acrf", set=verdict.go_name, accepted=verdict.accepted, errors=list(verdict.errors))
        if verdict.accepted:
            noti = notification_xml(verdict.ticket, self.sender, _original_form(verdict.go_name), verdict.anomalies)
            self._write_response("NOTI", env, noti, state)

    def _write_response(self, app: str, env: Env, content: bytes, state: dict[str, object]) -> Name:
        today = (self.today or dt.date.today()).strftime("%Y%m%d")
        seqs = state["seq"]
        assert isinstance(seqs, dict)
        key = f"{today}.{env}"
        seqs[key] = seqs.get(key, 0) + 1
        fo = Name(Prefix.FO, app, ONSS_SENDER, today, f"{seqs[key]:05d}", env)
        folder = response_folder(env)
        self.remote.put_bytes(content, folder, format_name(fo))
        fs = signature.encode_fs(signature.sign_file(self._identity, self.home / folder / format_name(fo)))
        self.remote.put_bytes(fs, folder, format_name(fo.with_prefix(Prefix.FS)))
        self.remote.put_bytes(b"", folder, format_name(fo.with_prefix(Prefix.GO)))
        return fo


def new_ticket() -> str:
    """Return a 13-character ticket like the ONSS's ReferenceNbr (e.g. 0380579A83Q1Z)."""
    alphabet = string.digits + string.ascii_uppercase
    return "0" + "".join(secrets.choice(alphabet) for _ in range(12))


def _original_form(go_name: str) -> str:
    fields = go_name.split(".")
    return f"{fields[1]}001" if len(fields) > 1 else "UNKNOWN"


def _now() -> tuple[str, str]:
    now = dt.datetime.now()
    return now.strftime("%Y-%m-%d"), now.strftime("%H:%M:%S.") + f"{now.microsecond // 1000:03d}"


def acrf_xml(verdict: Verdict) -> bytes:
    """Given a verdict, return the ACRF XML the transfer point would write (element names as in ONSS.md)."""
    date, hour = _now()
    errors = "".join(f"\n      <ErrorID>{escape(c)}</ErrorID>" for c in verdict.errors)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ACRF xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="ACRF_20262.xsd">
  <Form>
    <Identification>ACRF001</Identification>
    <FormCreationDate>{date}</FormCreationDate>
    <FormCreationHour>{hour}</FormCreationHour>
    <AttestationStatus>0</AttestationStatus>
    <TypeForm>FA</TypeForm>
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


def notification_xml(ticket: str, employer: str, original_form: str,
                     anomalies: tuple[tuple[str, str], ...] = ()) -> bytes:
    """Given the ACRF ticket and anomalies (ErrorID, class), return a NOTIFICATION XML with CRLF line ends."""
    date, hour = _now()
    blocking = any(cls != "NB" for _, cls in anomalies)
    reports = "".join(
        f"\r\n    <AnomalyReport>\r\n      <ErrorID>{escape(e)}</ErrorID>\r\n      <AnomalyClass>{escape(c)}</AnomalyClass>"
        f"\r\n      <Path>Employer/Worker[1]</Path>\r\n    </AnomalyReport>"
        for e, c in anomalies
    )
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<NOTIFICATION xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="NOTI_20262.xsd">
  <Form>
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
    <Reference>
      <ReferenceType>1</ReferenceType>
      <ReferenceNbr>{ticket}</ReferenceNbr>
      <ReferenceOrigin>1</ReferenceOrigin>
    </Reference>
    <EmployerId>{escape(employer)}</EmployerId>
    <HandledReference>
      <ReferenceType>2</ReferenceType>
      <ReferenceNbr>DOS{ticket[1:]}</ReferenceNbr>
      <ReferenceOrigin>2</ReferenceOrigin>
    </HandledReference>
    <HandlingResult>
      <ResultCode>{2 if blocking else 1}</ResultCode>{reports}
    </HandlingResult>
  </Form>
</NOTIFICATION>
"""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
