"""SIGKILL the real daemon at random moments while it sends 200 sets over SFTP; nothing lost, no GO twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from tests.fixtures.sshd import SshServer
from tests.helpers import Daemon, seeded_rng
from tests.test_uploader_sftp import assert_order_and_once, drop_sets

pytestmark = pytest.mark.slow

SETS = 200
KILLS = 12


def test_sigkill_at_random_moments(sftp_dir: Path, sshd: SshServer) -> None:
    rng = seeded_rng("ONSS_RELAY_CRASH_SEED")
    config = sftp_dir / "config.toml"
    # sshd on loopback, no proxy: what a killed process sent lands before its successor is up; a restart after a
    # kill mid-upload waits the quiet period all the same (stages/unclean_stop.py), kept short here
    config.write_text(config.read_text().replace('quiet_period = "1s"', 'quiet_period = "250ms"'))
    cfg = load_config(config, environ={})
    outbox = cfg.paths.outbox_dir
    gos = drop_sets(outbox, [(i, "T", 1 + (i % 4 == 0) * 2) for i in range(1, SETS + 1)])
    originals = {p.name: p.read_bytes() for p in outbox.iterdir()}
    log = sftp_dir / "daemon.log"
    daemon = Daemon(config, log)
    daemon.kill_at_random(rng, KILLS, 1.5)
    daemon.start()
    journal_path = cfg.paths.journal_path
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            if journal_path.exists() and not any(outbox.iterdir()):
                j = open_journal_at(journal_path)
                done = sum(n for s, n in j.counts().items() if s == State.SENT)
                j.close()
                if done == SETS:
                    break
            time.sleep(0.5)
    finally:
        assert daemon.stop(15) == 0
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
