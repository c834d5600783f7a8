"""sent/ as the claim's second memory of used sequences (a lost journal): a day's folder grows by thousands while
a large outbox is claimed and sent, and each claimed set asks it; only names new since the last look are parsed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onss_relay import sent_names
from onss_relay.names import parse_name
from tests.conftest import TODAY, fi_name


def go(seq: int) -> str:
    return "GO" + fi_name(seq)[2:-2]


def test_a_growing_sent_folder_is_parsed_once_per_new_name_and_again_when_a_name_went_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = tmp_path / "sent" / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    day.mkdir(parents=True)
    for seq in range(1, 101):
        (day / go(seq)).touch()
        (day / fi_name(seq)).touch()
    parsed: list[str] = []

    def counted(name: str):  # type: ignore[no-untyped-def]
        parsed.append(name)
        return parse_name(name)

    monkeypatch.setattr(sent_names, "parse_name", counted)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(7))) == day / go(7)
    assert len(parsed) == 100  # the GO files only
    mtime = day.stat().st_mtime_ns

    def changed() -> None:
        nonlocal mtime
        mtime += 1_000_000_000  # a new second: what a file archived later gives the folder
        os.utime(day, ns=(mtime, mtime))

    (day / go(101)).touch()
    changed()
    parsed.clear()
    assert names.sent_with(parse_name(go(101))) == day / go(101) and parsed == [go(101)]
    (day / go(7)).unlink()  # retention removed it: the folder is read again in full
    changed()
    parsed.clear()
    assert names.sent_with(parse_name(go(7))) is None and len(parsed) == 100
    assert names.sent_with(parse_name(go(102))) is None
