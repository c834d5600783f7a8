"""Polling a large OUT folder (issue 29): taken in batches, each committed before its remote delete; `poll --once`
stopped by SIGTERM ends between two batches with exit 0, SIGKILLed at any commit it resumes where it stopped, and
nothing is lost, fetched twice or kept under a second name."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import open_journal_at
from onss_relay.simulator import Verdict, acrf_xml
from tests.conftest import SENDER, TODAY
from tests.helpers import run_cli, wait_until

SETS = 600  # 1,800 files: six batches


def seed_answers(remote: Path, n: int) -> set[str]:
    """Given the remote home, write n ACRF answer triples (FO, FS, GO) in OUTTEST; return their names."""
    out = remote / "OUTTEST"
    names = set()
    for i in range(1, n + 1):
        base = f"ACRF.999999.{TODAY}.{i:05X}.T"
        verdict = Verdict(f"GO.DIMN.{SENDER}.{TODAY}.{i:05d}.T.1", "INTEST", (), f"0TICKET{i:06d}")
        for prefix, data in (("FO", acrf_xml(verdict)), ("FS", b"MIIB" * 20), ("GO", b"")):
            (out / f"{prefix}.{base}").write_bytes(data)
            names.add(f"{prefix}.{base}")
    return names


def check_everything_taken_once(relay_dir: Path, names: set[str]) -> None:
    """Given the answers seeded, check each is in the inbox once under its own name, in the journal, deleted
    remotely and linked, and the remote folder empty."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    assert sorted(p.name for p in (relay_dir / "remote" / "OUTTEST").iterdir()) == []
    assert sorted(p.name for p in (cfg.paths.inbox_dir / "OUTTEST").iterdir()) == sorted(names)
    journal = open_journal_at(cfg.paths.journal_path, readonly=True)
    try:
        rows = [journal.get_response("OUTTEST", n) for n in names]
    finally:
        journal.close()
    assert all(r is not None and r.deleted_remote and r.kind for r in rows)


def poll(relay_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("poll", "--once", "--config", str(relay_dir / "config.toml"), env=env or None, timeout=300)


@pytest.mark.slow
def test_poll_once_stopped_by_sigterm_ends_between_batches_and_the_next_resumes(relay_dir: Path) -> None:
    names = seed_answers(relay_dir / "remote", SETS)
    log = relay_dir / "poll.log"
    args = [sys.executable, "-m", "onss_relay.cli", "poll", "--once", "--config", str(relay_dir / "config.toml")]
    with log.open("wb") as f:
        proc = subprocess.Popen([*args, "--log-level", "info"], stdout=subprocess.PIPE, stderr=f)
    assert wait_until(lambda: "response_mirrored" in log.read_text(), 60, 0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert b"stopped before the end (SIGTERM): the next poll resumes" in stdout
    assert "poll_stopped" in log.read_text()
    left = len(list((relay_dir / "remote" / "OUTTEST").iterdir()))
    assert 0 < left < len(names) and left % 3 == 0  # whole batches taken, whole sets left
    r = poll(relay_dir)
    assert r.returncode == 0 and f"mirrored {left} response file(s), deleted {left} remotely" in r.stdout
    check_everything_taken_once(relay_dir, names)


@pytest.mark.slow
@pytest.mark.parametrize(
    "crash",
    [
        {"ONSS_RELAY_CRASH_AT_COMMIT": "2"},  # the first batch committed (commit 1 opens the journal), none deleted
        {"ONSS_RELAY_CRASH_AT_COMMIT": "4", "ONSS_RELAY_CRASH_AT_COMMIT_AFTER": "rename:100"},  # copied, uncommitted
    ],
)
def test_poll_once_sigkilled_mid_way_resumes_where_it_stopped(relay_dir: Path, crash: dict[str, str]) -> None:
    names = seed_answers(relay_dir / "remote", SETS)
    r = poll(relay_dir, **crash)
    assert r.returncode == -signal.SIGKILL
    copied = list((relay_dir / "spool" / "inbox" / "OUTTEST").glob("[!.]*"))
    assert copied and list((relay_dir / "remote" / "OUTTEST").iterdir())  # killed half way
    r = poll(relay_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    check_everything_taken_once(relay_dir, names)
