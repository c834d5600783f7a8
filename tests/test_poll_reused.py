"""A response name back on the server after a poll killed between its remote delete and the commit saying so
(review rev29): the journal still says the copy it holds is on the server, and the poll deleted the new file
unseen as 'held' (FS of 80 bytes back with 7 other bytes, after poll --once SIGKILLed and resumed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onss_relay.config import Config
from onss_relay.pipeline import Relay


def test_a_name_back_with_another_size_after_an_unrecorded_delete_is_downloaded_not_deleted_unseen(
    cfg: Config, relay_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = Relay(cfg)
    try:
        out = relay_dir / "remote" / "OUTTEST"
        (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<ACRF/>")
        (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
        with monkeypatch.context() as m:  # killed after the remote delete, before its commit
            m.setattr(relay.journal, "mark_responses_deleted", lambda folder, names: None)
            relay.poll_once()
        assert not (out / "FO.ACRF.999999.20260101.00001.T").exists()
        (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<ACRF>second</ACRF>")
        (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
        relay.poll_once()
        inbox = relay.spool.inbox / "OUTTEST"
        assert (inbox / "FO.ACRF.999999.20260101.00001.T").read_bytes() == b"<ACRF/>"
        assert (inbox / "FO.ACRF.999999.20260101.00001.T.1").read_bytes() == b"<ACRF>second</ACRF>"
    finally:
        relay.close()
