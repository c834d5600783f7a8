"""A backlog of held originals (issue 29 review: 2,188 released after watch.keep_released at once) is worked off
a page at a time, one look in /proc per page and a bounded number per pass, and a SIGTERM to `run` ends the
sweep between two files (held.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from onss_relay import held
from onss_relay.config import load_config
from onss_relay.spool import file_digest
from onss_relay.stages.uncertain import boot_id, boottime
from tests.conftest import fi_name
from tests.helpers import Daemon, wait_log


def fabricate_held(root: Path, n: int, ago: float = 3 * 86400, start: int = 1, batch: int | None = 64) -> Path:
    """Given the spool root, write n held originals held ``ago`` seconds ago (on the wall and boot clocks) as the
    relay holds them: in batches of ``batch`` under one record written when they were held (``hold_many``), or
    each beside its own record (``hold``: batch None); return held/."""
    folder = root / "held"
    folder.mkdir(parents=True, exist_ok=True)
    names = [fi_name(i) for i in range(start, start + n)]
    for first in range(0, n, batch or 1):
        group = names[first : first + (batch or 1)]
        within = folder / f"batch-{start + first}-{time.time_ns()}" if batch else folder
        within.mkdir(exist_ok=True)
        entries = {name: held_record(root, within / name, ago) for name in group}
        records = [(within.with_name(within.name + held.BATCH_RECORD), {"held": entries})] if batch else []
        records += [] if batch else [(folder / f"{name}{held.RECORD}", entries[name]) for name in group]
        for record, doc in records:
            record.write_text(json.dumps(doc))
            os.utime(record, (time.time() - ago, time.time() - ago))  # written when they were held
    return folder


def held_record(root: Path, path: Path, ago: float) -> dict[str, Any]:
    """Given the spool root, where an original is held and how long ago, write it; return its record."""
    path.write_bytes(b"<DmfA/>")
    st = path.stat()
    return {
        "file": path.name,
        "set": "GO" + path.name[2:-2],
        "digest": file_digest(path, "sha256"),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "held_at": time.time() - ago,
        "boottime": boottime() - ago,
        "boot_id": boot_id(),
        "sent_dir": str(root / "sent"),
        "ino": st.st_ino,
    }


def originals(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith((".held.json", ".held-batch.json")))


def test_a_backlog_of_held_originals_is_swept_a_page_per_look_in_proc_and_a_bounded_number_per_pass(
    relay_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    folder = fabricate_held(cfg.paths.root, held.SWEEP_MOST + 250)
    looks: list[int] = []
    real = held.open_for_writing

    def counted(paths: list[Path]) -> set[Path]:
        looks.append(len(paths))
        return real(paths)

    monkeypatch.setattr(held, "open_for_writing", counted)
    refused: list[list[Path]] = []
    assert held.sweep(cfg.paths.root, cfg.paths.outbox_dir, 3600, lambda *a: refused.append(a[0])) == held.SWEEP_MOST
    assert looks == [held.SWEEP_PAGE] * (held.SWEEP_MOST // held.SWEEP_PAGE)  # not one /proc scan per file
    assert originals(folder) == 250  # the rest waits for the next pass: new claims do not wait behind it
    assert held.sweep(cfg.paths.root, cfg.paths.outbox_dir, 3600, lambda *a: refused.append(a[0])) == 250
    assert list(folder.iterdir()) == [] and refused == []


@pytest.mark.slow
def test_sigterm_to_run_ends_the_sweep_of_a_backlog_of_held_originals_between_two_files(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    n = 3 * held.SWEEP_MOST
    folder = fabricate_held(cfg.paths.root, n)
    log = relay_dir / "run.log"
    daemon = Daemon(relay_dir / "config.toml", log)
    daemon.spawn()
    try:
        assert wait_log(log, "original_released", timeout=60), log.read_text()[-2000:]
        assert daemon.stop(timeout=60) == 0, log.read_text()[-2000:]
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
    text = log.read_text()
    after_stop = text[text.index('"stopping"') :].count("original_released")
    assert after_stop <= held.SWEEP_PAGE, after_stop  # the page already checked, not the whole backlog
    assert originals(folder) > 0


class Clocks:
    """The wall and boot clocks the sweep reads (held.time, held.boottime), moved by the test; the ``listings``
    of the hold folders and the records ``read`` are noted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wall, self.boot = time.time(), boottime()
        self.listings: list[str] = []
        self.read: list[str] = []
        monkeypatch.setattr(held, "time", SimpleNamespace(time=lambda: self.wall))
        monkeypatch.setattr(held, "boottime", lambda: self.boot)
        real_scandir, real_held_under = os.scandir, held._held_under

        def scandir(path: str) -> Any:
            self.listings.append(str(path))
            return real_scandir(path)

        def held_under(rec: Path) -> Any:
            self.read.append(rec.name)
            return real_held_under(rec)

        monkeypatch.setattr(held.os, "scandir", scandir)
        monkeypatch.setattr(held, "_held_under", held_under)

    def tick(self, seconds: float, wall: float | None = None) -> None:
        """Given seconds passed, move both clocks (the wall clock by ``wall`` when it was stepped)."""
        self.boot += seconds
        self.wall += seconds if wall is None else wall


def test_an_idle_relay_reads_no_held_record_until_one_is_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29 review: every held record was listed and parsed every 10 s (20,000 just sent: 35 % of a core)."""
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    folder = fabricate_held(root, 300, ago=0)  # just sent: five batch records
    fabricate_held(root, 3, ago=0, start=301, batch=None)  # and three held one by one
    fabricate_held(root, 5, ago=7200, start=401)  # held two hours ago: due
    fabricate_held(root, 2, ago=7200, start=501, batch=None)
    clocks = Clocks(monkeypatch)
    due = sorted(r.name for r in [*folder.glob("batch-401-*.held-batch.json"), *folder.glob("*50[12]*.held.json")])
    sweeper = held.HeldSweep()
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 7 and originals(folder) == 303
    assert sorted(clocks.read) == due and len(due) == 3  # only the records due were read
    clocks.read.clear()
    clocks.listings.clear()
    for _ in range(30):  # five minutes of passes every 10 s, nothing due
        clocks.tick(10)
        assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 0
    assert (clocks.read, clocks.listings) == ([], [])
    fabricate_held(root, 1, ago=time.time() - clocks.wall, start=601)  # sent meanwhile: due an hour from now
    clocks.tick(3600 - 300 + 1)  # an hour after the first 303
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 303
    assert originals(folder) == 1 and len(clocks.read) == 5 + 3  # the records due, not the one sent meanwhile
    assert sweeper.sweep(root, outbox, 0, lambda *a: None) == 1  # keep_released changed: listed again
    assert list(folder.iterdir()) == []  # each batch record went with the last of its originals


def test_a_sweep_cut_short_by_an_error_lists_again_at_the_next_pass(tmp_path: Path) -> None:
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    folder = fabricate_held(root, 3)
    [batch] = [p for p in folder.iterdir() if p.is_dir()]
    (batch / fi_name(2)).write_bytes(b"<DmfB/>")  # changed after it was sent: to failed/
    sweeper = held.HeldSweep()

    def full_disk(*a: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        sweeper.sweep(root, outbox, 3600, full_disk)
    refused: list[object] = []
    assert sweeper.sweep(root, outbox, 3600, lambda *a: refused.append(a[0])) == 2
    assert originals(folder) == 1 and len(refused) == 1  # not left for an hour behind the cursor


def test_a_wall_clock_stepped_forward_makes_a_pass_but_releases_nothing_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cursor is wall time from the records' mtimes; the time held is the boot clock's (``held_for``)."""
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    folder = fabricate_held(root, 70, ago=60)  # held a minute ago: two batch records
    fabricate_held(root, 1, ago=60, start=101, batch=None)
    clocks = Clocks(monkeypatch)
    sweeper = held.HeldSweep()
    clocks.tick(0, wall=7200)  # NTP steps the wall clock two hours forward: every mtime looks due
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 0 and originals(folder) == 71
    clocks.tick(3600 - 60 - 10)  # ten seconds before they are due on the boot clock: no listing
    listed = len(clocks.listings)
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 0 and len(clocks.listings) == listed
    clocks.tick(10)
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 71 and list(folder.iterdir()) == []


def test_a_wall_clock_set_back_lists_again_and_releases_on_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before the wall clock was set back have mtimes ahead of it: they are read (their time held
    is on the boot clock), never left until the wall clock catches up with their mtimes (a day here)."""
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    folder = fabricate_held(root, 70, ago=0)
    fabricate_held(root, 1, ago=0, start=101, batch=None)
    clocks = Clocks(monkeypatch)
    sweeper = held.HeldSweep()
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 0  # the cursor: an hour from now
    clocks.tick(60, wall=-86400)  # a minute later the wall clock is set back a day
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 0 and originals(folder) == 71
    clocks.tick(3600 - 60)
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 71 and list(folder.iterdir()) == []


def test_an_original_held_open_or_a_young_empty_batch_record_lists_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    folder = fabricate_held(root, 2, ago=7200)
    [batch] = [p for p in folder.iterdir() if p.is_dir()]
    young = fabricate_held(root, 1, ago=0, start=11)  # a batch being held: its record, none of its originals yet
    for p in young.glob("batch-11-*/*"):
        p.unlink()
    clocks = Clocks(monkeypatch)
    busy = batch / fi_name(1)
    monkeypatch.setattr(held, "open_for_writing", lambda paths: {p for p in paths if p == busy})
    sweeper = held.HeldSweep()
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 2 and originals(folder) == 1
    monkeypatch.setattr(held, "open_for_writing", lambda paths: set())
    clocks.tick(10)  # the writer closed it: the next pass lists again and releases it
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 1 and originals(folder) == 0
    assert len(list(folder.glob("*.held-batch.json"))) == 1  # the young one, not due
    assert sweeper.sweep(root, outbox, 30, lambda *a: None) == 0  # keep_released under RECORD_GRACE
    clocks.tick(31)
    assert sweeper.sweep(root, outbox, 30, lambda *a: None) == 0 and len(list(folder.glob("batch-11-*"))) == 2
    clocks.tick(held.RECORD_GRACE)  # left alone RECORD_GRACE (maybe being held), then dropped
    assert sweeper.sweep(root, outbox, 30, lambda *a: None) == 0 and list(folder.iterdir()) == []


def test_damaged_hold_records_are_set_aside_once_and_never_keep_good_originals_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the sweep's cursor: a hold record that cannot be read was skipped without a word at every pass,
    its original held for ever; damaged records being the oldest due, SWEEP_MOST of them kept every good original
    behind them held. They are renamed .damaged and said once; their originals stay; the good one is released."""
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    folder = fabricate_held(root, 2, ago=5 * 86400, batch=None)
    for i in (1, 2):
        (folder / f"{fi_name(i)}{held.RECORD}").write_text("{trunc")
        os.utime(folder / f"{fi_name(i)}{held.RECORD}", (time.time() - 5 * 86400,) * 2)
    fabricate_held(root, 1, ago=3 * 86400, start=3, batch=None)
    monkeypatch.setattr(held, "SWEEP_MOST", 2)
    sweeper = held.HeldSweep()
    for _ in range(3):
        sweeper.sweep(root, outbox, 3600, lambda *a: None)
        sweeper._next_look = 0.0  # the next pass lists again at once
    assert not (folder / fi_name(3)).exists(), "the good original stayed behind the damaged records"
    assert (folder / fi_name(1)).exists() and (folder / fi_name(2)).exists()  # kept for a person
    assert sorted(p.name for p in folder.glob("*.damaged")) == sorted(
        f"{fi_name(i)}{held.RECORD}.damaged" for i in (1, 2)
    )
