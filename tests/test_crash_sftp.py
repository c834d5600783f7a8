"""SIGKILL the real daemon at random moments while it sends 200 sets over SFTP; nothing lost, no GO twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from tests.fixtures.sshd import SshServer
from tests.helpers import start_daemon
from tests.test_uploader_sftp import assert_order_and_once, drop_sets

SETS = 200
KILLS = 20


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_daemon(config, log, debug=False)


def test_sigkill_at_random_moments(sftp_dir: Path, sshd: SshServer) -> None:
    seed = int(os.environ.get("ONSS_RELAY_CRASH_SEED", random.randrange(1 << 30)))
    print(f"crash test seed: {seed} (rerun with ONSS_RELAY_CRASH_SEED={seed})")
    rng = random.Random(seed)
    config = sftp_dir / "config.toml"
    cfg = load_config(config, environ={})
    outbox = cfg.paths.outbox_dir
    gos = drop_sets(outbox, [(i, "T", 1 + (i % 4 == 0) * 2) for i in range(1, SETS + 1)])
    originals = {p.name: p.read_bytes() for p in outbox.iterdir()}
    log = sftp_dir / "daemon.log"
    for _ in range(KILLS):
        before = log.read_text().count("relay_started") if log.exists() else 0
        proc = start(config, log)
        while log.read_text().count("relay_started") == before and proc.poll() is None:
            time.sleep(0.01)  # kill once it works, not while Python is still importing
        time.sleep(rng.uniform(0.0, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    started_before = log.read_text().count("relay_started")
    proc = start(config, log)
    journal_path = cfg.paths.journal_path
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            ready = log.read_text().count("relay_started") > started_before
            if ready and journal_path.exists() and not any(outbox.iterdir()):
                j = open_journal_at(journal_path)
                done = sum(n for s, n in j.counts().items() if s == State.SENT)
                j.close()
                if done == SETS:
                    break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    j = open_journal_at(journal_path)
    assert j.counts() == {"sent": SETS}, log.read_text()[-3000:]
    assert list(outbox.iterdir()) == [] and list(cfg.paths.failed_dir.iterdir()) == []
    sent_files = {p.name: p for p in cfg.paths.sent_dir.rglob("*") if p.is_file()}
    for go in gos:
        row = j.get_set(go)
        assert row is not None and row.archived
        for fi in row.parts:
            assert (sshd.home / "INTEST" / fi).read_bytes() == originals[fi] == sent_files[fi].read_bytes()
        assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
        assert go in sent_files
