"""Many processes opening one fresh SQLite journal at once (a burst of `submit`s on a new spool, the daemon and
a `send --once` started together): none may fail with "database is locked". Two of them switching the fresh
file to WAL at once deadlock inside SQLite (each holds a read lock and wants the write lock); the loser is told
SQLITE_BUSY at once, without SQLite's busy handler: the relay tries again, for up to its busy timeout."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import sys
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from onss_relay.journal.sqlite import SqliteJournal

PROCESSES = 10
ROUNDS = 300

HOLD_WRITE_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")  # what another opener holds while it makes the fresh file WAL
print("held", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def test_a_fresh_journal_whose_lock_another_process_holds_is_opened_once_it_is_free(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(path), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        SqliteJournal(path).close()  # waits for the other process, then switches to WAL and creates the schema
    finally:
        assert holder.wait(30) == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sets'").fetchone()[0] == 1


def open_fresh_journals(folder: Path, barrier: Barrier, failures: mp.Queue[str]) -> None:
    """Given a folder, a barrier shared by every process and a queue, open and close the journal of each round's
    fresh spool at the same instant as the others; put every error on the queue, then "done"."""
    for r in range(ROUNDS):
        barrier.wait()
        try:
            SqliteJournal(folder / str(r) / "journal.db").close()
        except Exception as e:  # noqa: BLE001  (every error is the finding)
            failures.put(f"round {r}: {e!r}")
    failures.put("done")


@pytest.mark.slow
def test_many_processes_opening_a_fresh_journal_at_once_never_find_it_locked(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    barrier, failures = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [ctx.Process(target=open_fresh_journals, args=(tmp_path, barrier, failures)) for _ in range(PROCESSES)]
    for w in workers:
        w.start()
    found, done = [], 0
    while done < PROCESSES:
        item = failures.get(timeout=120)
        done += item == "done"
        found += [item] if item != "done" else []
    for w in workers:
        w.join(10)
    assert found == [], found
    assert all(w.exitcode == 0 for w in workers)
