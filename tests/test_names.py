"""The file-name grammar: round trips, derived names, and a precise error for every invalid name."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onss_relay.errors import InvalidName
from onss_relay.names import (
    Env,
    Name,
    Prefix,
    application_codes,
    format_name,
    fs_name_for,
    go_name_for,
    group_sets,
    missing_parts,
    parse_name,
    part_names,
    response_folder,
    upload_folder,
)

dates = st.dates(min_value=dt.date(1990, 1, 1), max_value=dt.date(2099, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))
seqs = st.integers(1, 99999).map(lambda i: f"{i:05d}")


@st.composite
def names(draw: st.DrawFn) -> Name:
    prefix = draw(st.sampled_from(list(Prefix)))
    legacy = draw(st.booleans())
    total = None if legacy else draw(st.integers(1, 9))
    part = None
    if total is not None and prefix not in (Prefix.GO, Prefix.TD):
        part = draw(st.integers(1, total))
    return Name(
        prefix,
        draw(st.sampled_from(sorted(application_codes()))),
        draw(st.from_regex(r"[0-9]{6}", fullmatch=True)),
        draw(dates),
        draw(seqs),
        draw(st.sampled_from(list(Env))),
        total,
        part,
    )


@given(names())
def test_parse_format_round_trip(n: Name) -> None:
    assert parse_name(format_name(n)) == n


FIELD_JUNK = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=12)


@given(names(), st.integers(0, 5), FIELD_JUNK)
def test_a_mangled_field_is_rejected_or_still_valid(n: Name, index: int, junk: str) -> None:
    fields = format_name(n).split(".")
    fields[index] = junk
    mangled = ".".join(fields)
    try:
        parsed = parse_name(mangled)
    except InvalidName as e:
        assert e.field and e.why  # the error names the field and says why
        return
    # accepted only if the junk happened to be a valid value for that field
    assert format_name(parsed) == mangled


@given(st.text(max_size=80))
def test_arbitrary_text_is_never_accepted_unless_it_formats_back(text: str) -> None:
    try:
        parsed = parse_name(text)
    except InvalidName:
        return
    assert format_name(parsed) == text


@pytest.mark.parametrize(
    "name, field, acrf",
    [
        ("FI.DMFA.123456.20030801.00000.R.1.1", "sequence", "ACRF-127"),
        ("FI.DMFA.123456.20030801.0001.R.1.1", "sequence", "ACRF-112"),
        ("FI.DMFA.123456.20030801.0000a.R.1.1", "sequence", "ACRF-367"),
        ("FI.DMFA.123456.20030231.00001.R.1.1", "date", "ACRF-110"),
        ("FI.DMFA.123456.2003081.00001.R.1.1", "date", "ACRF-109"),
        ("FI.DMFA.12345.20030801.00001.R.1.1", "sender number", "ACRF-108"),
        ("FI.XX-X.123456.20030801.00001.R.1.1", "name", None),
        ("FI.XXX.123456.20030801.00001.R.1.1", "application code", "ACRF-129"),
        ("FI.DMFA.123456.20030801.00001.X.1.1", "environment", "ACRF-117"),
        ("FI.DMFA.123456.20030801.00001.R.0.1", "part count", "ACRF-116"),
        ("FI.DMFA.123456.20030801.00001.R.A.1", "part count", "ACRF-115"),
        ("FI.DMFA.123456.20030801.00001.R.10.1", "part count", "ACRF-114"),
        ("FI.DMFA.123456.20030801.00001.R.2.3", "part number", "ACRF-123"),
        ("FI.DMFA.123456.20030801.00001.R.1", "part fields", None),
        ("GO.DMFA.123456.20030801.00001.R.1.1", "part fields", None),
        ("XX.DMFA.123456.20030801.00001.R.1.1", "prefix", None),
        ("FI.DMFA.123456", "name", None),
        ("../FI.DMFA.123456.20030801.00001.R.1.1", "name", None),
        ("FI.DMFA.123456.20030801.00001.R.1.1\n", "name", None),
        ("", "name", None),
        ("F" * 300, "name", None),
    ],
)
def test_invalid_names_say_which_field_and_why(name: str, field: str, acrf: str | None) -> None:
    with pytest.raises(InvalidName) as exc:
        parse_name(name)
    assert exc.value.field == field
    assert exc.value.acrf == acrf
    assert field in str(exc.value)


def test_derived_names_follow_the_onss_examples() -> None:
    fi = parse_name("FI.DMFA.123456.20030801.00001.R.1.1")
    assert format_name(fs_name_for(fi)) == "FS.DMFA.123456.20030801.00001.R.1.1"
    assert format_name(go_name_for(fi)) == "GO.DMFA.123456.20030801.00001.R.1"
    legacy = parse_name("FI.DMFA.123456.20030801.00001.R")
    assert format_name(go_name_for(legacy)) == "GO.DMFA.123456.20030801.00001.R"


def test_sets_group_and_report_missing_parts() -> None:
    parts = [parse_name(f"FI.DMFA.123456.20030801.00001.T.4.{i}") for i in (3, 1, 2)]
    other = parse_name("FI.DIMN.123456.20030801.00002.T.1.1")
    groups = group_sets([*parts, other])
    assert [format_name(p) for p in groups["GO.DMFA.123456.20030801.00001.T.4"]] == [
        f"FI.DMFA.123456.20030801.00001.T.4.{i}" for i in (1, 2, 3)
    ]
    go = parse_name("GO.DMFA.123456.20030801.00001.T.4")
    assert missing_parts(go, parts) == ["FI.DMFA.123456.20030801.00001.T.4.4"]
    assert len(part_names(go)) == 4


def test_environment_folders() -> None:
    assert [upload_folder(e) for e in Env] == ["IN", "INTEST", "INTEST-S"]
    assert [response_folder(e) for e in Env] == ["OUT", "OUTTEST", "OUTTEST-S"]


@given(names())
def test_go_name_never_has_a_part_number(n: Name) -> None:
    go = go_name_for(n.with_prefix(Prefix.FI) if n.prefix not in (Prefix.GO, Prefix.TD) else n)
    assert go.part is None and go.total == n.total
    assert parse_name(format_name(go)) == go


@given(
    st.one_of(
        st.dates().map(lambda d: d.strftime("%Y%m%d")),
        st.text(alphabet="0123456789", min_size=6, max_size=9),
        st.text(max_size=9),
    )
)
def test_a_names_creation_date_is_what_strptime_reads(field: str) -> None:
    name = Name(Prefix.FI, "DMFA", "123456", field, "00001", Env.T, 1, 1)
    try:
        expected: dt.date | str = dt.datetime.strptime(field, "%Y%m%d").date()
    except ValueError as e:
        expected = str(e)
    try:
        got: dt.date | str = name.creation_date
    except ValueError as e:
        got = str(e)
    assert got == expected
