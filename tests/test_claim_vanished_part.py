"""A part deleted from the outbox while its page is being claimed: that set waits (incomplete), the others are
claimed; the scan does not end on FileNotFoundError (send --once exited 4, "local problem", for a vanished FI)."""

from __future__ import annotations

import pytest

from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.stages.claim import Claimer
from tests.conftest import fi_name
from tests.test_uploader_sftp import drop_sets


def test_a_part_deleted_while_its_page_is_claimed_leaves_that_set_waiting(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(1, "T", 3), (2, "T", 1)])
        real = Claimer._settled

        def settled_then_gone(self, key, files):  # type: ignore[no-untyped-def]
            settled = real(self, key, files)
            if key == gos[0]:  # the payroll software takes a part back just after the scan listed it
                (relay.spool.outbox / fi_name(1, "T", 3, 3)).unlink(missing_ok=True)
            return settled

        monkeypatch.setattr(Claimer, "_settled", settled_then_gone)
        claimed = relay.claim()
        assert gos[1] in claimed
        assert gos[0] not in claimed
        assert relay.journal.get_set(gos[0]) is None
    finally:
        relay.close()


def test_a_part_deleted_while_its_set_is_checked_leaves_that_set_waiting(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(1, "T", 3), (2, "T", 1)])
        real = Claimer._complete

        def gone_then_complete(self, group, new, busy):  # type: ignore[no-untyped-def]
            if group.key == gos[0]:  # taken back after the names were found complete and settled
                (relay.spool.outbox / fi_name(1, "T", 3, 2)).unlink(missing_ok=True)
            return real(self, group, new, busy)

        monkeypatch.setattr(Claimer, "_complete", gone_then_complete)
        claimed = relay.claim()
        assert gos[1] in claimed
        assert gos[0] not in claimed
        assert relay.journal.get_set(gos[0]) is None
    finally:
        relay.close()
