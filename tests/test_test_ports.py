"""The tests' own ports: a server stopped and started again in a test must find its port still free, so ports
are picked where the kernel hands out none by itself and claimed against the other workers (CI, 2026-12-01: a
restarted PostgreSQL found another worker's sshd on its port)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import sshd
from tests.fixtures.sshd import ephemeral_low, free_port


def test_a_port_is_below_the_range_the_kernel_hands_out() -> None:
    assert 1024 <= free_port() < ephemeral_low()


def test_a_claimed_port_is_not_given_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sshd, "PORT_CLAIMS", tmp_path)
    first = free_port()
    picks = iter([first, first, first - 1])
    monkeypatch.setattr(sshd.random, "randrange", lambda *_: next(picks))
    assert free_port() == first - 1
    assert (tmp_path / str(first)).read_text() == str(os.getpid())


def test_the_claim_of_a_process_gone_is_taken_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sshd, "PORT_CLAIMS", tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    port = ephemeral_low() - 7
    (tmp_path / str(port)).write_text(gone.stdout.strip())
    monkeypatch.setattr(sshd.random, "randrange", lambda *_: port)
    assert free_port() == port
    assert (tmp_path / str(port)).read_text() == str(os.getpid())
