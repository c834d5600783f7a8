"""What the ONSS answered: parse ACRF and notification XML (defusedxml), decompress CO files, explain codes.

Pure functions over bytes; linking to declaration sets happens in ``answers.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import importlib.resources
import io
import zipfile
import zlib
from functools import cache
from typing import IO
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

MAX_DECOMPRESSED = 256 << 20


class ResponseParseError(ValueError):
    """A response file is not the XML we expect; it is kept in the inbox and reported."""


@dataclasses.dataclass(frozen=True)
class Acrf:
    file_name: str | None  # the GO name we sent
    ticket: str | None
    accepted: bool
    result_code: str
    errors: tuple[str, ...]  # ErrorID values, like ACRF-125


@dataclasses.dataclass(frozen=True)
class Anomaly:
    error_id: str
    anomaly_class: str | None
    path: str | None

    @property
    def blocking(self) -> bool:
        return self.anomaly_class != "NB"


@dataclasses.dataclass(frozen=True)
class Notification:
    ticket: str | None  # Reference/ReferenceNbr: the ACRF ticket of what we sent
    handled_ticket: str | None  # HandledReference/ReferenceNbr: the declaration's own ticket
    file_name: str | None  # FileReference/FileName when present
    original_form: str | None
    result_code: str | None
    diagnosis: str | None
    anomalies: tuple[Anomaly, ...]

    @property
    def accepted(self) -> bool:
        return self.result_code == "1"


@cache
def acrf_descriptions() -> dict[str, str]:
    """Return the ACRF code table (ACRF-125 → words) shipped with the package."""
    text = importlib.resources.files("onss_relay.data").joinpath("acrf-codes.tsv").read_text()
    return {r["code"]: r["description"] for r in csv.DictReader(text.splitlines(), delimiter="\t")}


def describe(code: str) -> str:
    """Given an ACRF error code, return it with its description, or say it is not in our table."""
    return f"{code}: {acrf_descriptions().get(code, 'code not in our table; see the ONSS documentation')}"


def _parse_xml(data: bytes) -> Element:
    try:
        root: Element = SafeET.fromstring(data, forbid_dtd=True)
        return root
    except DefusedXmlException as e:
        raise ResponseParseError(f"refused unsafe XML ({type(e).__name__})") from None
    except SafeET.ParseError as e:
        raise ResponseParseError(f"not well-formed XML ({e})") from None


def _text(root: Element, path: str) -> str | None:
    el = root.find(path)
    return el.text.strip() if el is not None and el.text and el.text.strip() else None


def root_tag(data: bytes) -> str:
    return _parse_xml(data).tag


def parse_acrf(data: bytes) -> Acrf:
    """Given ACRF XML bytes, return the acknowledgement; raise ResponseParseError when it is not one."""
    root = _parse_xml(data)
    if root.tag != "ACRF":
        raise ResponseParseError(f"root element is {root.tag!r}, not ACRF")
    code = _text(root, ".//ReceptionResult/ResultCode")
    if code is None:
        raise ResponseParseError("ACRF without ReceptionResult/ResultCode")
    errors = tuple(e.text.strip() for e in root.iterfind(".//ReceptionResult/ErrorID") if e.text)
    return Acrf(
        file_name=_text(root, ".//FileReference/FileName"),
        ticket=_text(root, ".//FileReference/ReferenceNbr"),
        accepted=code == "1",
        result_code=code,
        errors=errors,
    )


def parse_notification(data: bytes) -> Notification:
    """Given NOTIFICATION XML bytes, return it; raise ResponseParseError when it is not one."""
    root = _parse_xml(data)
    if root.tag != "NOTIFICATION":
        raise ResponseParseError(f"root element is {root.tag!r}, not NOTIFICATION")
    anomalies = tuple(
        Anomaly(_text(a, "ErrorID") or "?", _text(a, "AnomalyClass"), _text(a, "Path"))
        for a in root.iterfind(".//AnomalyReport")
    )
    return Notification(
        ticket=_text(root, ".//Reference/ReferenceNbr"),
        handled_ticket=_text(root, ".//HandledReference/ReferenceNbr"),
        file_name=_text(root, ".//FileReference/FileName"),
        original_form=_text(root, ".//HandledOriginalForm/Identification"),
        result_code=_text(root, ".//HandlingResult/ResultCode"),
        diagnosis=_text(root, ".//HandlingResult/Diagnosis") or _text(root, ".//Diagnosis"),
        anomalies=anomalies,
    )


def find_ticket(data: bytes) -> str | None:
    """Given any response XML, return the first ReferenceNbr in it (to link unknown response types)."""
    try:
        return _text(_parse_xml(data), ".//ReferenceNbr")
    except ResponseParseError:
        return None


def decompress(data: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Given a CO file's bytes (gzip, zip or zlib), return the content, refusing more than ``limit`` bytes."""
    if data[:2] == b"\x1f\x8b":
        return _read_capped(gzip.GzipFile(fileobj=io.BytesIO(data)), limit)
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [i for i in z.infolist() if not i.is_dir()]
            if len(members) != 1:
                raise ResponseParseError(f"compressed response holds {len(members)} files; expected 1")
            with z.open(members[0]) as f:
                return _read_capped(f, limit)
    try:
        d = zlib.decompressobj()
        out = d.decompress(data, limit + 1)
    except zlib.error:
        raise ResponseParseError("CO file is not gzip, zip or zlib data") from None
    if len(out) > limit:
        raise ResponseParseError(f"compressed response expands beyond {limit} bytes")
    return out


def _read_capped(f: IO[bytes] | gzip.GzipFile, limit: int) -> bytes:
    try:
        out = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise ResponseParseError(f"CO file is damaged ({e})") from None
    if len(out) > limit:
        raise ResponseParseError(f"compressed response expands beyond {limit} bytes")
    return out
