"""A backlog of held originals (issue 29 review: 2,188 released after watch.keep_released at once) is worked off
a page at a time, one look in /proc per page and a bounded number per pass, and a SIGTERM to `run` ends the
sweep between two files (held.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from onss_relay import held
from onss_relay.config import load_config
from onss_relay.spool import file_digest
from tests.conftest import fi_name
from tests.helpers import Daemon, wait_log


def fabricate_held(root: Path, n: int, ago: float = 3 * 86400, start: int = 1) -> Path:
    """Given the spool root, write n held originals with their records, held ``ago`` seconds ago; return held/."""
    folder = root / "held"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        name = fi_name(i)
        path = folder / name
        path.write_bytes(b"<DmfA/>")
        st = path.stat()
        record = {
            "file": name,
            "set": "GO" + name[2:-2],
            "digest": file_digest(path, "sha256"),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "held_at": time.time() - ago,
            "sent_dir": str(root / "sent"),
            "ino": st.st_ino,
            "ctime_ns": st.st_ctime_ns,
        }
        (folder / f"{name}.held.json").write_text(json.dumps(record))
        os.utime(folder / f"{name}.held.json", (record["held_at"], record["held_at"]))  # written when held
    return folder


def originals(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if not p.name.endswith(".held.json"))


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


def test_an_idle_relay_reads_no_held_record_until_one_is_due(relay_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29 review: every held record was listed and parsed every 10 s (20,000 just sent: 35 % of a core)."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    root, outbox = cfg.paths.root, cfg.paths.outbox_dir
    folder = fabricate_held(root, 300, ago=0)  # just sent
    fabricate_held(root, 5, ago=7200, start=301)  # held two hours ago: due
    now = [time.time()]
    monkeypatch.setattr(held, "time", SimpleNamespace(time=lambda: now[0]))
    reads: list[str] = []
    listings: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str) -> object:
        listings.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(held, "json", SimpleNamespace(loads=lambda b: reads.append("r") or json.loads(b)))
    monkeypatch.setattr(held.os, "scandir", scandir)
    sweeper = held.HeldSweep()
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 5 and originals(folder) == 300
    assert len(reads) == 5  # only the records due were parsed
    reads.clear()
    listings.clear()
    for _ in range(30):  # five minutes of passes every 10 s, nothing due
        now[0] += 10
        assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 0
    assert (reads, listings) == ([], [])
    fabricate_held(root, 1, ago=time.time() - now[0], start=400)  # sent meanwhile: due an hour from now
    now[0] += 3600 - 300 + 1  # an hour after the first 300
    assert sweeper.sweep(root, outbox, 3600, lambda *a: None) == 300
    assert originals(folder) == 1 and len(reads) == 300
    assert sweeper.sweep(root, outbox, 0, lambda *a: None) == 1  # keep_released changed: listed again
    assert originals(folder) == 0


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


def test_a_sweep_cut_short_by_an_error_lists_again_at_the_next_pass(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    folder = fabricate_held(cfg.paths.root, 3)
    (folder / fi_name(2)).write_bytes(b"<DmfB/>")  # changed after it was sent: to failed/
    sweeper = held.HeldSweep()

    def full_disk(*a: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        sweeper.sweep(cfg.paths.root, cfg.paths.outbox_dir, 3600, full_disk)
    refused: list[object] = []
    assert sweeper.sweep(cfg.paths.root, cfg.paths.outbox_dir, 3600, lambda *a: refused.append(a[0])) == 2
    assert originals(folder) == 1 and len(refused) == 1  # not left for an hour behind the cursor
