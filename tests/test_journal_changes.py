"""Typed changes of a set's data (issue 25, remaining): the journal's transition, transition_many and
update_data take a DataChange, whose fields mirror SetData's, so that mypy refuses a wrong field name or type
before the code runs (keyword blobs were a TypeError at run time only, in the middle of a transaction)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from onss_relay.journal import DataChange, SetData

REPO = Path(__file__).resolve().parent.parent

SNIPPET = """\
from onss_relay.journal import Change, DataChange, Journal, State


def good(j: Journal) -> None:
    j.transition("GO", State.SIGNED, data=DataChange(fs=("FS.x",), digests={"FI.x": "sha256:00"}))
    j.transition_many([Change("GO", State.SENT, data=DataChange(sent_dir="sent/x", uncertain=None))])
    j.update_data("GO", DataChange(same_content_ok=True))


def keyword_blob(j: Journal) -> None:
    j.update_data("GO", acrff=None)


def misspelled(j: Journal) -> None:
    j.transition("GO", State.SIGNED, data=DataChange(fss=("FS.x",)))


def wrong_type(j: Journal) -> None:
    j.transition_many([Change("GO", State.SIGNED, data=DataChange(fs="FS.x"))])
"""


@pytest.mark.slow  # mypy over the package, uncached: about 30 s
def test_mypy_refuses_a_wrong_field_of_a_sets_data_before_it_runs(tmp_path: Path) -> None:
    snippet = tmp_path / "caller.py"
    snippet.write_text(SNIPPET)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(snippet)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = sorted({int(n) for n in re.findall(r"caller\.py:(\d+): error", r.stdout)})
    wanted = [
        i for i, line in enumerate(SNIPPET.splitlines(), 1) if "acrff" in line or "fss=" in line or '"FS.x")' in line
    ]
    assert len(wanted) == 3 and lines == wanted, r.stdout


def test_a_data_change_has_every_field_of_set_data_and_their_types() -> None:
    kept = {f.name: f"{f.type} | Keep" for f in dataclasses.fields(SetData)}
    assert {f.name: f.type for f in dataclasses.fields(DataChange)} == kept
    assert DataChange().applied_to(SetData(fs=("FS.a",))) == SetData(fs=("FS.a",))  # nothing given, nothing set
    assert DataChange(sent_dir=None).applied_to(SetData(sent_dir="x")) == SetData()  # None is a value
