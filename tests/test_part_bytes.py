"""part_bytes: a small set's FI parts read once for the claim's checks give exactly what streaming each check
over the files gives (well-formedness and its reason's words, encoding warnings, keys, content digest), on
hostile bytes (hypothesis) and through the claim itself (a set quarantined, a set claimed with warnings and
keys), whether the set is held (small) or streamed (larger than READ_ONCE_MAX)."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onss_relay import part_bytes
from onss_relay.config import Config, load_config
from onss_relay.declaration import declaration_warnings, xml_problem
from onss_relay.declaration_keys import declaration_keys
from onss_relay.names import parse_name
from onss_relay.part_bytes import open_part, read_once
from onss_relay.pipeline import Relay
from onss_relay.stages.same_content import content_digest
from tests.conftest import fi_name
from tests.helpers import cut_into_parts

GO = parse_name("GO" + fi_name(1, total=3)[2:].rsplit(".", 2)[0])
FORM = (
    "<Form><Identification>DMFA</Identification><FormCreationDate>2024-01-02</FormCreationDate>"
    "<FormCreationHour>10:11:12.000</FormCreationHour><Reference><ReferenceType>1</ReferenceType>"
    "<ReferenceOrigin>1</ReferenceOrigin><ReferenceNbr>REF-{n}</ReferenceNbr></Reference>"
    "<NaturalPerson><INSS>8501010012{n}</INSS><Name>Jos\u00e9</Name></NaturalPerson></Form>"
)
DOCUMENTS = [
    '<?xml version="1.0" encoding="UTF-8"?><DmfA>' + FORM.format(n=1) + FORM.format(n=2) + "</DmfA>",
    '<?xml version="1.0" encoding="ISO-8859-1"?><DmfA>' + FORM.format(n=3) + "</DmfA>",
    "<DmfA>" + FORM.format(n=4) + "</DmfA>",  # no prolog, not ASCII
    '<?xml version="1.0"?><DmfA>' + FORM.format(n=5) + "<Worker>x</Wor",  # truncated
    '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
    "not xml at all, a flat file\r\n",
]


def checks(parts: list[Path]) -> tuple[object, ...]:
    """Given a set's parts in order, return what every claim check says of them (an error as its words)."""
    said: list[object] = []
    for check in (
        lambda: xml_problem(parts),
        lambda: declaration_warnings(GO, parts),
        lambda: declaration_keys(*parts),
        lambda: content_digest(parts),
    ):
        try:
            said.append(check())
        except Exception as e:  # the same error, or the same value, either way
            said.append(f"{type(e).__name__}: {e}")
    return tuple(said)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(
        st.sampled_from(DOCUMENTS).flatmap(
            lambda d: st.sampled_from(["utf-8", "utf-16", "iso-8859-1", "cp1252"]).map(
                lambda codec: d.encode(codec, errors="replace")
            )
        ),
        st.binary(max_size=400).map(lambda b: b'<?xml version="1.0" encoding="UTF-8"?><a>' + b),
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=2),
)
def test_checks_on_held_bytes_say_what_they_say_on_the_files(content: bytes, cuts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        parts = cut_into_parts(Path(folder), content, cuts)
        streamed = checks(parts)
        with read_once(parts):
            assert all(isinstance(open_part(p), io.BytesIO) for p in parts)  # held: no file opened again
            held = checks(parts)
    assert held == streamed


def test_a_set_larger_than_the_limit_is_streamed_and_a_missing_part_is_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [tmp_path / fi_name(1, total=2, part=1), tmp_path / fi_name(1, total=2, part=2)]
    parts[0].write_bytes(DOCUMENTS[0].encode()[:100])
    parts[1].write_bytes(DOCUMENTS[0].encode()[100:])
    monkeypatch.setattr(part_bytes, "READ_ONCE_MAX", len(DOCUMENTS[0].encode()) - 1)
    with read_once(parts):
        assert not any(isinstance(open_part(p), io.BytesIO) for p in parts)  # together one byte too many
    gone = tmp_path / fi_name(2)
    with read_once([gone]), pytest.raises(FileNotFoundError):
        open_part(gone)  # the check meets the error on the file itself, as when streamed


def claim_outcome(relay_dir: Path, root: str) -> dict[str, object]:
    """Given the relay folder and a spool root, claim a set of broken XML (quarantined at once) and a set with
    an encoding warning and keys; return the quarantine's reason and detail and the claimed set's record."""
    env = {"ONSS_RELAY__PATHS__ROOT": root, "ONSS_RELAY__WATCH__SETTLE": "0s"}
    cfg: Config = load_config(relay_dir / "config.toml", environ=env | {"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "0s"})
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / fi_name(1)).write_bytes(DOCUMENTS[3].encode())
    (cfg.paths.outbox_dir / fi_name(2, total=2, part=1)).write_bytes(DOCUMENTS[2].encode()[:90])
    (cfg.paths.outbox_dir / fi_name(2, total=2, part=2)).write_bytes(DOCUMENTS[2].encode()[90:])
    relay = Relay(cfg)
    try:
        claimed = relay.claim()
        assert claimed == ["GO" + fi_name(2, total=2)[2:].rsplit(".", 1)[0]]
        why = json.loads((cfg.paths.failed_dir / f"{fi_name(1)}.reason.json").read_text())
        row = relay.journal.get_set(claimed[0])
        assert row is not None
        return {
            "reason": why["reason"],
            "detail": why["detail"],
            "warnings": row.data.warnings,
            "keys": sorted(relay.journal.keys_of(claimed[0])),
        }
    finally:
        relay.close()


def test_the_claim_quarantines_and_records_the_same_whether_the_set_is_held_or_streamed(
    relay_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = claim_outcome(relay_dir, "spool-held")
    monkeypatch.setattr(part_bytes, "READ_ONCE_MAX", 0)
    streamed = claim_outcome(relay_dir, "spool-streamed")
    assert held == streamed
    assert held["reason"] == "not well-formed XML" and "line 1" in str(held["detail"])
    assert held["warnings"] and ("sender_ref", "REF-4") in held["keys"]  # type: ignore[operator]
