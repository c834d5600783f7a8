"""Work in a forked child (send --once claims and signs there): results of any size, errors, a dying child."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from onss_relay.errors import CertificateError
from onss_relay.forked import Forked
from onss_relay.journal import Journal, open_journal_at


def test_a_result_larger_than_the_pipe_arrives(tmp_path: Path) -> None:
    """10,000 claimed names are ~400 kB: more than a pipe holds, so the child waits for a reader."""
    names = [f"GO.DMFA.123456.20261127.{i:05d}.T.1" for i in range(1, 20001)]
    child = Forked(lambda journal: names, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-child")
    deadline = time.monotonic() + 30
    while not child.done():  # the parent's upload loop asks this while it waits for sets
        assert time.monotonic() < deadline, "the child never finished"
        time.sleep(0.01)
    assert child.result() == names


def test_the_work_uses_its_own_journal_connection(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    open_journal_at(path).close()

    def work(journal: Journal) -> int:
        journal.add_set("GO.DMFA.123456.20261127.00001.T.1", "T", ["FI.DMFA.123456.20261127.00001.T.1.1"])
        return os.getpid()

    pid = Forked(work, lambda: open_journal_at(path), "test-child").result()
    assert pid != os.getpid()
    journal = open_journal_at(path)
    assert journal.get_set("GO.DMFA.123456.20261127.00001.T.1") is not None
    journal.close()


def test_an_error_in_the_child_is_raised_in_the_parent(tmp_path: Path) -> None:
    def work(journal: Journal) -> None:
        raise CertificateError("signer.p12: the signing certificate has expired")

    with pytest.raises(CertificateError, match="has expired"):
        Forked(work, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-child").result()


def test_a_child_that_dies_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    def work(journal: Journal) -> None:
        os._exit(7)

    with pytest.raises(RuntimeError, match="test-child ended with exit code 7"):
        Forked(work, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-child").result()


def test_threads_asking_at_once_all_see_the_one_result(tmp_path: Path) -> None:
    """send --once's uploader threads each ask done(): two readers of one pipe once split its message, one got
    the result and the other an end of file, and the run ended with 'ended with exit code 0 (no reason given)'."""
    for _ in range(40):
        child = Forked(lambda journal: ["x"] * 2000, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-child")
        deadline = time.monotonic() + 30

        def ask(child: Forked[list[str]] = child, deadline: float = deadline) -> None:
            while not child.done() and time.monotonic() < deadline:
                pass

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert child.result() == ["x"] * 2000
