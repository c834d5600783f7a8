"""json_text.dumps_indented: the results files' text, built faster than json.dumps(indent=2) and the same, byte
for byte, for every value (what json.dumps turns down it turns down with the same error)."""

from __future__ import annotations

import enum
import json
import random
from pathlib import Path
from typing import Any

import pytest

from onss_relay.config import Config
from onss_relay.journal import AnomalyRecord, NotificationRecord, WorkerResult, open_journal_at
from onss_relay.json_text import dumps_indented
from onss_relay.results import ResultsWriter
from onss_relay.spool import Spool
from tests.test_status_page import GO, notified_set


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def same(value: Any) -> None:
    assert dumps_indented(value) == json.dumps(value, indent=2)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -12,
        10**30,
        1.5,
        -0.0,
        1e300,
        3.141592653589793,
        float("nan"),
        float("inf"),
        float("-inf"),
        "",
        'é \u2028 \ud800 \x00 " \\ / \n\t<script>',
        "😀 𝄞",
        [],
        {},
        (),
        [[]],
        [{}],
        {"a": {}},
        {"a": []},
        (1, (2, ())),
        {"k": [1, 2.5, None, True, False, "x", {"y": (3,)}]},
        {"é": "ü", "": ""},
        {1: "int key", "b": 2},
        {True: 1, None: 2, 1.5: 3},
        {"a": Colour.RED, "b": Level.HIGH},
        [Colour.RED, Level.HIGH],
        Colour.RED,
        Level.HIGH,
        {"n": float("nan"), "i": [float("inf")]},
    ],
)
def test_every_kind_of_value_is_written_as_json_dumps_writes_it(value: Any) -> None:
    same(value)


def test_random_nested_values_are_written_as_json_dumps_writes_them() -> None:
    """Issue 27 (parentcpu): 2,000 random documents, nested 0-6 deep, keys and strings with any characters."""
    rng = random.Random(27)

    def text() -> str:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x2FFFF)])) for _ in range(4))

    def value(depth: int) -> Any:
        kind = rng.randrange(9 if depth < 6 else 5)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.randrange(-(10**12), 10**12)
        if kind == 2:
            return rng.uniform(-1e6, 1e6) * rng.choice([1, 1e-300, 1e300])
        if kind in (3, 4):
            return text()
        if kind in (5, 6):
            return {text(): value(depth + 1) for _ in range(rng.randrange(4))}
        if kind == 7:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return tuple(value(depth + 1) for _ in range(rng.randrange(3)))

    for _ in range(2000):
        same(value(0))


def test_deep_nesting_cycles_and_unknown_values_behave_as_json_dumps() -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = {"a": [deep]}
    same(deep)
    cycle: dict[str, Any] = {}
    cycle["me"] = cycle
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_indented(cycle)
    for odd in ({"p": Path("/x")}, [object()], {("t",): 1}, {1, 2}):
        with pytest.raises(TypeError) as ours:
            dumps_indented(odd)
        with pytest.raises(TypeError) as theirs:
            json.dumps(odd, indent=2)
        assert str(ours.value) == str(theirs.value)


def test_a_results_file_is_what_json_dumps_indent_2_wrote(cfg: Config) -> None:
    """The results file of a notified set (ACRF, notification, worker anomaly, history) is, byte for byte, the
    text json.dumps(indent=2) gives of its document: readers see the same file as before."""
    spool = Spool(cfg.paths)
    spool.create()
    journal = open_journal_at(cfg.paths.journal_path)
    anomaly = AnomalyRecord("90373-333", "B", "/x/Start", True, "blocking", "Start", "2026-13-01", None, "wrong é")
    worker = WorkerResult("90042125519", "0", "refused", (anomaly,), 1)
    notification = NotificationRecord("0", False, "0HANDLED", "3", "notif.xml", workers=(worker,), summary="refused")
    notified_set(journal, GO, notification)
    ResultsWriter(spool, journal).catch_up()
    written = (spool.results / f"{GO}.json").read_bytes()
    assert written == json.dumps(json.loads(written), indent=2).encode()
    assert b'"anomalies"' in written and b"wrong \\u00e9" in written
    journal.close()
