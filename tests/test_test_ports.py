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


def test_a_claim_being_made_by_another_worker_is_not_taken_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Review rev13: a claim file created but its pid not written yet read as pid 0, 'gone', and was taken over:
    two workers racing for one port both got it (25 rounds in 3,000)."""
    monkeypatch.setattr(sshd, "PORT_CLAIMS", tmp_path)
    port = ephemeral_low() - 9
    holder = subprocess.Popen(  # another worker, between creating its claim and writing its pid
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print(flush=True); sys.stdin.read()",
            str(tmp_path / str(port)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        holder.stdout.readline()
        picks = iter([port, port - 1])
        monkeypatch.setattr(sshd.random, "randrange", lambda *_: next(picks))
        assert free_port() == port - 1
    finally:
        holder.communicate("")


def test_a_kernel_range_from_1024_gives_a_port_above_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Review rev13: ip_local_port_range starting at 1024 left no port below it: ValueError from randrange."""
    monkeypatch.setattr(sshd, "PORT_CLAIMS", tmp_path)
    monkeypatch.setattr(sshd, "ephemeral_range", lambda: (1024, 60999))
    assert 60999 < free_port() <= 65535


def test_the_claims_folder_is_open_to_every_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Review rev13: made with mkdir(mode=0o1777) it was 0o1755 under umask 022: another user's test run on the
    machine failed with PermissionError."""
    monkeypatch.setattr(sshd, "PORT_CLAIMS", tmp_path / "claims")
    free_port()
    assert (tmp_path / "claims").stat().st_mode & 0o7777 == 0o1777
