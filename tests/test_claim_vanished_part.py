"""A part deleted from the outbox while its page is being claimed: that set waits (incomplete), the others are
claimed; the scan does not end on FileNotFoundError (send --once exited 4, "local problem", for a vanished FI)."""

from __future__ import annotations

from typing import Any

import pytest

from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.stages.claim import Claimer
from tests.conftest import fi_name
from tests.test_uploader_sftp import drop_sets


@pytest.mark.parametrize(
    ("step", "part", "after"),
    [
        ("_settled", 3, True),  # the payroll software takes a part back just after the scan listed it
        ("_complete", 2, False),  # taken back after the names were found complete and settled
    ],
)
def test_a_part_deleted_during_the_claim_leaves_that_set_waiting(
    cfg: Config, monkeypatch: pytest.MonkeyPatch, step: str, part: int, after: bool
) -> None:
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(1, "T", 3), (2, "T", 1)])
        real = getattr(Claimer, step)

        def deleting(self: Claimer, group_or_key: Any, *args: Any) -> Any:
            key = group_or_key if isinstance(group_or_key, str) else group_or_key.key

            def delete() -> None:
                if key == gos[0]:
                    (relay.spool.outbox / fi_name(1, "T", 3, part)).unlink(missing_ok=True)

            if not after:
                delete()
            result = real(self, group_or_key, *args)
            if after:
                delete()
            return result

        monkeypatch.setattr(Claimer, step, deleting)
        claimed = relay.claim()
        assert gos[1] in claimed
        assert gos[0] not in claimed
        assert relay.journal.get_set(gos[0]) is None
    finally:
        relay.close()


def test_another_file_gone_during_the_checks_still_stops_the_claim(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a set's own file taken back leaves the set waiting: a spool folder gone is said, not skipped in silence."""
    relay = Relay(cfg)
    try:
        drop_sets(relay.spool.outbox, [(1, "T", 1)])
        gone = relay.spool.outbox.parent / "failed"

        def folder_gone(self: Claimer, *args: Any) -> Any:
            raise FileNotFoundError(2, "No such file or directory", str(gone))

        monkeypatch.setattr(Claimer, "_complete", folder_gone)
        with pytest.raises(FileNotFoundError) as e:
            relay.claim()
        assert e.value.filename == str(gone)
    finally:
        relay.close()
