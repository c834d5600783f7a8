"""Audit of issue 25: the spool a PostgreSQL journal's sets are in is recorded on both sides (spool_identity.py).
A standby whose shared storage was not mounted (its spool an empty local folder) took over and gave up the 35
sets the killed relay had left mid-upload as failed (/work/rev/25 reproduction); now it refuses in one sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.fixtures.postgres import journal_counts, lease_live
from tests.helpers import run_cli, wait_until
from tests.test_uploader_sftp import drop_sets


def test_a_relay_on_a_spool_that_is_not_the_journals_refuses_to_run(relay_dir: Path, pg_server: Any) -> None:
    url = pg_server.new_database()
    config = relay_dir / "config.toml"
    config.write_text(f'{config.read_text()}\n[journal]\nurl = "{url}"\nlease = "3s"\n')
    drop_sets(relay_dir / "spool" / "outbox", [(1, "T", 1), (2, "T", 1)])
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    assert (relay_dir / "spool" / "journal-id").exists()
    drop_sets(relay_dir / "spool" / "outbox", [(3, "T", 1)])  # a set claimed, then its relay killed
    run_cli("send", "--once", "--config", str(config), env={"ONSS_RELAY_CRASH_AT_COMMIT": "1"})
    assert wait_until(lambda: not lease_live(url), 30)
    before = journal_counts(url)
    unmounted = relay_dir / "unmounted"
    unmounted.mkdir()
    other = relay_dir / "other.toml"
    other.write_text(config.read_text().replace('root = "spool"', f'root = "{unmounted}"'))
    for command in (["send", "--once"], ["poll", "--once"], ["run"]):
        r = run_cli(*command, "--config", str(other), timeout=60)
        assert r.returncode == 2 and "is the shared storage mounted here?" in r.stderr, (command, r.stderr)
    assert journal_counts(url) == before
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0  # its own spool still runs
