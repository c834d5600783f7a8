"""`submit` on a day of a secretariat's volume (review of issue 29): past 99,999 sets in a day it failed with a
bare StopIteration; now a day whose five-digit sequences are all used is refused in one sentence naming the
day (exit 1), nothing placed, and the files of the day in sent/ still count as taken."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

from tests.helpers import run_cli


def test_submit_past_99999_sets_in_a_day_says_no_sequence_is_left(relay_dir: Path) -> None:
    config, outbox = relay_dir / "config.toml", relay_dir / "spool" / "outbox"
    content = relay_dir / "declaration.xml"
    content.write_bytes(b"<DmfA>x</DmfA>")
    first = run_cli("submit", str(content), "--app", "DMFA", "--env", "T", "--config", str(config))
    today = dt.date.today().strftime("%Y%m%d")
    assert first.returncode == 0 and first.stdout.split() == [f"FI.DMFA.123456.{today}.00001.T.1.1"], first
    with sqlite3.connect(relay_dir / "spool" / "journal.db") as db:  # the other 99,998 of the day reserved
        db.executemany(
            "INSERT INTO sequences (sender, date, env, seq) VALUES ('123456', ?, 'T', ?)",
            [(today, seq) for seq in range(2, 100_000)],
        )
    refused = run_cli("submit", str(content), "--app", "DMFA", "--env", "T", "--config", str(config))
    assert refused.returncode == 1, refused
    said = [line for line in refused.stderr.splitlines() if "no sequence left" in line]
    assert said and f"no sequence left for {today}: sender 123456 has used all 99,999" in said[0], refused.stderr
    assert "Traceback" not in refused.stderr and "StopIteration" not in refused.stderr
    assert os.listdir(outbox) == [f"FI.DMFA.123456.{today}.00001.T.1.1"]  # nothing more placed


def test_submit_counts_the_day_s_files_in_sent_as_taken(relay_dir: Path) -> None:
    """A journal lost: the day's names archived in sent/ (any application, FI or GO) are not handed out again,
    those of another day or environment are."""
    config = relay_dir / "config.toml"
    today = dt.date.today()
    day = today.strftime("%Y%m%d")
    sent = relay_dir / "spool" / "sent" / today.isoformat()
    sent.mkdir(parents=True)
    for name in (
        f"GO.DIMN.123456.{day}.00007.T.1",
        f"FI.DIMN.123456.{day}.00009.R.1.1",
        "FI.DIMN.123456.20200101.00011.T.1.1",
    ):
        (sent / name).write_bytes(b"")
    content = relay_dir / "declaration.xml"
    content.write_bytes(b"<DmfA>x</DmfA>")
    r = run_cli("submit", str(content), "--app", "DMFA", "--env", "T", "--config", str(config))
    assert r.returncode == 0 and r.stdout.split() == [f"FI.DMFA.123456.{day}.00008.T.1.1"], r
