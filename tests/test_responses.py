"""Response parsing: realistic ACRF and notifications, compressed files, malformed XML and XML bombs."""

from __future__ import annotations

import gzip
import io
import zipfile

import pytest

from onss_relay.responses.acrf import parse_acrf
from onss_relay.responses.codes import acrf_descriptions, describe
from onss_relay.responses.notification import parse_notification
from onss_relay.responses.reading import ResponseParseError, decompress

ACCEPTED = b"""<?xml version="1.0" encoding="UTF-8"?>
<ACRF xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="ACRF_20262.xsd">
  <Form>
    <Identification>ACRF001</Identification>
    <FormCreationDate>2026-11-24</FormCreationDate>
    <FormCreationHour>10:15:42.123</FormCreationHour>
    <AttestationStatus>0</AttestationStatus>
    <TypeForm>FA</TypeForm>
    <FileReference>
      <FileName>GO.DMFA.123456.20261124.00001.R.1</FileName>
      <ReferenceOrigin>1</ReferenceOrigin>
      <ReferenceNbr>0380579A83Q1Z</ReferenceNbr>
    </FileReference>
    <ReceptionResult>
      <ResultCode>1</ResultCode>
    </ReceptionResult>
  </Form>
</ACRF>"""

REFUSED = ACCEPTED.replace(
    b"<ResultCode>1</ResultCode>", b"<ResultCode>0</ResultCode><ErrorID>ACRF-125</ErrorID><ErrorID>ACRF-133</ErrorID>"
)

NOTIFICATION = b"""<?xml version="1.0" encoding="UTF-8"?>\r
<NOTIFICATION>\r
  <Form>\r
    <Identification>NOTI001</Identification>\r
    <HandledOriginalForm><Identification>DMFA001</Identification></HandledOriginalForm>\r
    <Reference><ReferenceNbr>0380579A83Q1Z</ReferenceNbr></Reference>\r
    <EmployerId>123456</EmployerId>\r
    <HandledReference><ReferenceNbr>DOS2026112400001</ReferenceNbr></HandledReference>\r
    <HandlingResult>\r
      <ResultCode>0</ResultCode>\r
      <Diagnosis>3</Diagnosis>\r
      <AnomalyReport><ErrorID>00024-152</ErrorID><AnomalyClass>NB</AnomalyClass><Path>Worker[1]</Path></AnomalyReport>\r
      <AnomalyReport><ErrorID>00315-009</ErrorID><AnomalyClass>B</AnomalyClass><Path>Worker[2]</Path></AnomalyReport>\r
    </HandlingResult>\r
  </Form>\r
</NOTIFICATION>\r
"""


def test_accepted_acrf() -> None:
    a = parse_acrf(ACCEPTED)
    assert a.accepted and a.ticket == "0380579A83Q1Z" and a.file_name == "GO.DMFA.123456.20261124.00001.R.1"
    assert a.errors == ()


def test_refused_acrf_with_descriptions() -> None:
    a = parse_acrf(REFUSED)
    assert not a.accepted and a.errors == ("ACRF-125", "ACRF-133")
    assert describe("ACRF-125") == "ACRF-125: invalid signature"
    assert "not in our table" in describe("ACRF-999")
    assert len(acrf_descriptions()) >= 40


def test_notification_with_anomalies() -> None:
    n = parse_notification(NOTIFICATION)
    f = n.first
    assert f.tickets() == ["0380579A83Q1Z"] and f.handled_ticket == "DOS2026112400001" and f.original_form is None
    assert f.result_code == "0" and not n.accepted and f.diagnosis == "3"
    # blocking anomalies are kept and shown first (issue 23), whatever their order in the file
    assert [(a.error_id, a.blocking) for a in f.anomalies] == [("00315-009", True), ("00024-152", False)]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"<ACRF><Form>", "not well-formed"),
        (b"", "not well-formed"),
        (b"<NOTIFICATION/>", "not ACRF"),
        (b"<ACRF><Form/></ACRF>", "without ReceptionResult"),
        (b"<ACRF/>", "without a Form"),
    ],
)
def test_malformed_acrf(data: bytes, message: str) -> None:
    with pytest.raises(ResponseParseError, match=message):
        parse_acrf(data)


def test_xml_bombs_are_refused_without_expansion() -> None:
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(
            f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'.encode()
            for i in range(1, 10)
        )
        + b"]><ACRF><Form>&lol9;</Form></ACRF>"
    )
    with pytest.raises(ResponseParseError, match="unsafe XML"):
        parse_acrf(lol)
    external = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><ACRF>&e;</ACRF>'
    with pytest.raises(ResponseParseError, match="unsafe XML"):
        parse_acrf(external)


def test_compressed_responses() -> None:
    assert decompress(gzip.compress(ACCEPTED)) == ACCEPTED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("FO.ACRF.xml", ACCEPTED)
    assert decompress(buf.getvalue()) == ACCEPTED
    bomb = gzip.compress(b"\0" * (20 << 20))
    with pytest.raises(ResponseParseError, match="expands beyond"):
        decompress(bomb, limit=1 << 20)
    with pytest.raises(ResponseParseError):
        decompress(b"not compressed at all")
