"""declaration_encoding: what a declaration's first bytes say of its encoding, and the check never raising on
hostile bytes (fuzzed with hypothesis over every codec name Python knows, byte-order marks and cuts)."""

from __future__ import annotations

import encodings.aliases
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onss_relay.declaration import declaration_warnings, xml_problem
from onss_relay.declaration_encoding import BOMS, read_head
from onss_relay.names import parse_name
from tests.conftest import fi_name
from tests.helpers import cut_into_parts

CODEC_NAMES = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())) + ["nosuchcodec"]
GO = parse_name("GO" + fi_name(1, total=3)[2:].rsplit(".", 2)[0])


def test_read_head_follows_appendix_f() -> None:
    assert read_head('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16-le")).family == "utf-16-le"
    head = read_head('<?xml version="1.0" encoding="UTF-16"?><a/>'.encode("utf-16"))
    assert head.bom == 2 and head.has_prolog and head.declared == "UTF-16"
    assert read_head(b"\xef\xbb\xbf<?xml version='1.0'?><a/>") == read_head(b"\xef\xbb\xbf<?xml version='1.0'?>")
    assert read_head(b"<a/>").has_prolog is False and read_head(b"<a/>").family is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mark=st.sampled_from([b""] + [m for m, _ in BOMS]),
    codec=st.sampled_from(CODEC_NAMES),
    body=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=2),
)
def test_the_checks_never_raise_on_hostile_bytes(mark: bytes, codec: str, body: bytes, cuts: list[int]) -> None:
    content = mark + f'<?xml version="1.0" encoding="{codec}"?>'.encode() + body
    with tempfile.TemporaryDirectory() as folder:
        parts = cut_into_parts(Path(folder), content, cuts)
        warnings = declaration_warnings(GO, parts)
        problem = xml_problem(parts)
    assert all(isinstance(w, str) and w for w in warnings)
    assert problem is None or isinstance(problem, str)
