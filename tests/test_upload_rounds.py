"""send --once's upload rounds beside the signing child (pipeline.Relay._upload_while_signing): a pause between two
rounds while the child signs, none before the last round once it is done (it cost 50 ms at the end of every run)."""

from __future__ import annotations

import threading

import pytest

from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.stages.upload_queue import UploadReport


class Pauses(threading.Event):
    """The relay's stop event, noting each pause asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout)
        return False


class Child:
    """The signing child as the upload loop sees it: done() answers as scripted, then True."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers

    def done(self) -> bool:
        return self.answers.pop(0) if self.answers else True


def _rounds(cfg: Config, monkeypatch: pytest.MonkeyPatch, answers: list[bool]) -> tuple[int, list[float | None]]:
    """Run the upload loop against a scripted child; return how many rounds it ran and the pauses it made."""
    relay = Relay(cfg)
    try:
        stop = Pauses()
        monkeypatch.setattr(relay, "stop", stop)
        rounds = []
        monkeypatch.setattr(relay.uploader, "upload_pending", lambda more=None: rounds.append(1) or UploadReport())
        relay._upload_while_signing(Child(answers), UploadReport())  # type: ignore[arg-type]
        return len(rounds), stop.pauses
    finally:
        relay.close()


def test_signing_over_during_a_round_the_last_round_comes_at_once(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    # signing at the look before the first round, over at the look after it
    assert _rounds(cfg, monkeypatch, [False, True]) == (2, [])


def test_while_the_child_signs_the_rounds_pause_between_them(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    # before and after the first round, before and after the second: still signing; then over
    assert _rounds(cfg, monkeypatch, [False, False, False, False, True]) == (3, [0.05, 0.05])
