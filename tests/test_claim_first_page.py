"""The claim's first page is smaller (stages/claim.py FIRST_PAGE): signing, and so uploading, starts after a few sets'
checks instead of a whole page's; the pages after it are CLAIM_PAGE sets, and no set is left out or claimed twice."""

from __future__ import annotations

import pytest

from onss_relay.config import Config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.stages import claim
from tests.test_uploader_sftp import drop_sets


def test_the_first_page_claims_a_few_sets_then_pages_of_claim_page(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claim, "CLAIM_PAGE", 20)
    monkeypatch.setattr(claim, "FIRST_PAGE", 5)
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 61)])
        queued_at_each_page: list[int] = []

        def on_page() -> None:  # what signing is handed after each page's commit
            queued_at_each_page.append(relay.journal.counts().get(State.QUEUED, 0))

        claimed = relay.claimer.scan(on_page)
        assert queued_at_each_page == [5, 25, 45, 60]
        assert sorted(claimed) == sorted(gos)
    finally:
        relay.close()


def test_a_first_page_larger_than_the_page_is_a_page(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claim, "CLAIM_PAGE", 4)  # what tests lower to see pages (FIRST_PAGE stays 25)
    relay = Relay(cfg)
    try:
        drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 11)])
        queued_at_each_page: list[int] = []
        relay.claimer.scan(lambda: queued_at_each_page.append(relay.journal.counts().get(State.QUEUED, 0)))
        assert queued_at_each_page == [4, 8, 10]
    finally:
        relay.close()
