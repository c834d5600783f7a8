"""`send --once` ended by SIGTERM (a cron timeout, `systemctl stop` of a oneshot unit) stops cleanly at a safe point,
as the daemon does: exit 0, says it stopped, leaves no marker of requests in flight, and the next `send --once`
finds no unclean stop and no uncertain set (review rev29: it died by the signal, and the next run held 297 sets
uncertain for the quiet period)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import outbox_of_dimonas, run_cli, wait_until


def test_send_once_stopped_by_sigterm_stops_cleanly_and_the_next_goes_on(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    n = 1500
    outbox_of_dimonas(relay_dir, n)
    remote = relay_dir / "remote" / "INTEST"
    err = relay_dir / "first.err"
    with err.open("wb") as e:
        p = subprocess.Popen(
            [sys.executable, "-m", "onss_relay.cli", "send", "--once", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=e,
            text=True,
        )
        assert wait_until(lambda: len(list(remote.glob("GO.*"))) >= 50, 120, 0.02), err.read_text()[-2000:]
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=120)
    sent_first = len(list(remote.glob("GO.*")))
    assert p.returncode == 0, err.read_text()[-2000:]
    assert sent_first < n, "the stop came after the last set: nothing shown"
    assert "stopped before the end (SIGTERM)" in out, out
    assert not (relay_dir / "spool" / "uploads-in-flight").exists()
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "unclean_stop_found" not in r.stderr and "uncertain" not in r.stdout, r.stdout + r.stderr[-2000:]
    assert len(list(remote.glob("GO.*"))) == n
    # every set's results file says what the journal has (issue 27: results are written while uploading now)
    from onss_relay.config import load_config
    from onss_relay.journal import open_journal_at
    from onss_relay.spool import Spool
    from tests.test_results_while_sending import assert_every_result_is_the_sets_document

    cfg = load_config(config, environ={})
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        assert assert_every_result_is_the_sets_document(Spool(cfg.paths), journal) == n
    finally:
        journal.close()
