"""A line per set said through a logger made once per batch (log.py, above setup_logging): structlog's module
loggers assemble a new logger at every call (~5 µs, a line filtered out included), eight times per set on its
way out. The lines are the same, each set's, and a reconfiguration (structlog.testing.capture_logs) still sees
them."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from structlog import _config

from onss_relay.journal import Change, NewSet, State, open_journal_at

SETS = [f"GO.DIMN.123456.20260101.{i:05d}.T.1" for i in range(1, 31)]


def test_a_batch_of_state_changes_assembles_one_logger_per_call_and_says_every_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assembled = 0
    real = _config.BoundLoggerLazyProxy.bind

    def counted(self, **values):  # type: ignore[no-untyped-def]
        nonlocal assembled
        assembled += 1
        return real(self, **values)

    monkeypatch.setattr(_config.BoundLoggerLazyProxy, "bind", counted)
    journal = open_journal_at(tmp_path / "j.db")
    try:
        with structlog.testing.capture_logs() as logs:
            journal.add_sets([NewSet(go, "T", [f"FI{go[2:]}.1"]) for go in SETS])
            journal.transition_many([Change(go, State.SIGNED) for go in SETS])
    finally:
        journal.close()
    assert assembled == 2  # one per batch: thirty sets, two batches (was one per line: 60)
    said = [(line["state"], line["set"]) for line in logs if line["event"] == "set_state"]
    assert said == [("queued", go) for go in SETS] + [("signed", go) for go in SETS]
