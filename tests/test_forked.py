"""Work in a forked child (send --once claims and signs there): results of any size, errors, a dying child."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onss_relay.config import Config
from onss_relay.errors import EXIT_LOCAL, CertificateError, JournalBusy
from onss_relay.forked import Forked, heap_frozen
from onss_relay.journal import Journal, open_journal_at
from onss_relay.pipeline import Relay
from tests.test_uploader_sftp import drop_sets


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


class TwoArguments(Exception):
    """An error that pickles but does not unpickle (cryptography's InternalError(msg, err_code) is one)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def test_an_error_that_pickles_but_does_not_unpickle_reaches_the_parent_as_its_words(tmp_path: Path) -> None:
    def work(journal: Journal) -> None:
        raise TwoArguments("the key file went away", 7)

    with pytest.raises(RuntimeError, match="TwoArguments: the key file went away"):
        Forked(work, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-child").result()


def test_a_journal_the_child_cannot_open_is_its_error_in_the_parent(tmp_path: Path) -> None:
    """A journal busy or full when the child opens it is said as such (exit 4), not as a child that ended
    with exit code 1 for no reason given (an "unexpected error", exit 1)."""

    def busy() -> Journal:
        raise JournalBusy(f"{tmp_path / 'journal.sqlite'}: another process holds the journal's write lock")

    with pytest.raises(JournalBusy, match="holds the journal's write lock") as e:
        Forked(lambda journal: 1, busy, "test-child").result()
    assert e.value.exit_code == EXIT_LOCAL


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


def test_send_once_killed_by_sigterm_takes_its_claim_child_with_it(relay_dir: Path) -> None:
    """`send --once` ended by SIGTERM (a cron job's `timeout`) while its child claims: the child dies too and the
    spool's relay lock is free at once for the next command (issue 29's volume run: the orphan child held it
    through a whole 100,000-file scan, and the next `poll --once` was refused, "a relay is running")."""
    import signal
    import subprocess
    import sys

    from tests.conftest import fi_name
    from tests.helpers import run_cli, wait_until

    (relay_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (relay_dir / "spool" / "outbox" / fi_name(1, "T")).write_bytes(b"<DmfA>x</DmfA>\r\n")
    env = {**os.environ, "ONSS_RELAY__WATCH__SETTLE": '"60s"'}  # the child waits 60 s to look again
    cfg = str(relay_dir / "config.toml")
    send = subprocess.Popen([sys.executable, "-m", "onss_relay.cli", "send", "--once", "--config", cfg], env=env)
    children = Path(f"/proc/{send.pid}/task/{send.pid}/children")
    assert wait_until(lambda: bool(children.read_text().split()), 30), "send --once never forked its child"
    child = int(children.read_text().split()[0])
    send.send_signal(signal.SIGTERM)
    send.wait(30)
    assert wait_until(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 20), "the child lives on"
    again = run_cli("send", "--once", "--config", cfg, env={"ONSS_RELAY__WATCH__SETTLE": '"0s"'})
    assert "running on this spool" not in again.stderr, again.stderr
    assert again.returncode == 0, again.stderr


def _zombie(pid: int) -> bool:
    """Given a pid, return whether it is a zombie (dead, not yet reaped by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_send_once_whose_signing_child_is_killed_says_so_in_one_sentence(relay_dir: Path) -> None:
    """Found in the review of issue 29: a claim-and-sign child killed from outside (the OOM killer; here the crash
    hook's SIGKILL at its first rename) made `send --once` say "unexpected error RuntimeError(...) … report it".
    It says which process was killed by which signal, that nothing is lost, and exits 4 (a local problem)."""
    from tests.conftest import fi_name
    from tests.helpers import run_cli

    config = relay_dir / "config.toml"
    (relay_dir / "spool" / "outbox").mkdir(parents=True)
    (relay_dir / "spool" / "outbox" / fi_name(1)).write_bytes(b"<Dimona>1</Dimona>")
    crash = {"ONSS_RELAY_CRASH_AT_COMMIT": "1", "ONSS_RELAY_CRASH_AT_COMMIT_AFTER": "rename"}
    killed = run_cli("send", "--once", "--config", str(config), env=crash)
    assert killed.returncode == EXIT_LOCAL, killed.stderr[-3000:]
    said = [ln for ln in killed.stderr.splitlines() if "command_failed" in ln]
    assert len(said) == 1 and "onss-relay-sign was killed by SIGKILL before it finished" in said[0], said
    assert "unexpected error" not in killed.stderr and "Traceback" not in killed.stderr


def test_the_heap_frozen_while_a_block_runs_is_given_back_after_it_even_on_an_error() -> None:
    assert gc.get_freeze_count() == 0
    with pytest.raises(ValueError, match="stop"), heap_frozen():
        assert gc.get_freeze_count() > 1000  # the interpreter's and the test run's objects
        raise ValueError("stop")
    assert gc.get_freeze_count() == 0  # a process calling it at every run keeps no garbage out of reach


def test_send_once_forks_its_child_with_the_heap_frozen_and_unfreezes_it_after(
    cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's collections leave the pages it shares with its parent alone (no copy of the parent's heap), and
    the parent's full collections during the run scan only what the run made."""
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 6)])
        seen = tmp_path / "frozen-in-child"
        real = Forked.__init__

        def recording(self: Forked[int], work: Callable[[Journal], int], *args: Any) -> None:
            def noted(journal: Journal) -> int:
                seen.write_text(str(gc.get_freeze_count()))
                return work(journal)

            real(self, noted, *args)

        monkeypatch.setattr(Forked, "__init__", recording)
        report = relay.send_once(wait_for_settle=False)
        assert sorted(report.upload.sent) == sorted(gos)
        assert int(seen.read_text()) > 1000
        assert gc.get_freeze_count() == 0
    finally:
        relay.close()
