"""Answer files without GO (issue 29 review): a file without GO is taken once its size held across two polls, so
the poll remembers sizes between polls. It held them all in memory (114.6 MB at 100,000 files) and kept in
poll-sightings.json the sightings of files already taken; now they are rows of poll-sightings.db, joined to the
spilled listing, rewritten from it: only files still listed and not taken are kept (poll_listing.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import structlog.testing

from onss_relay.config import Config
from onss_relay.pipeline import Relay
from onss_relay.stages import poll
from onss_relay.stages.poll import Poller
from onss_relay.transport.local import LocalTransport
from tests.conftest import TODAY


def seed_without_go(remote: Path, n: int, start: int = 1) -> list[str]:
    """Given the remote home, write n FO answers without GO in OUTTEST; return their names."""
    names = [f"FO.ACRF.999999.{TODAY}.{i:05X}.T" for i in range(start, start + n)]
    for name in names:
        (remote / "OUTTEST" / name).write_bytes(b"<ACRF/>")
    return names


def sightings(cfg: Config) -> list[tuple[str, str, int]]:
    db = sqlite3.connect(cfg.paths.root / "poll-sightings.db")
    try:
        return list(db.execute("SELECT folder, name, size FROM sightings ORDER BY name"))
    finally:
        db.close()


def kept_per_file(poller: Poller) -> int:
    """The entries the poller holds between polls in its own containers (none should grow with the files)."""
    return sum(len(v) for v in vars(poller).values() if isinstance(v, dict | set | list))


@pytest.fixture
def relay(cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(cfg)
    yield r
    r.close()


def test_files_without_go_are_remembered_on_disk_and_forgotten_once_taken_or_gone(
    relay: Relay, cfg: Config, relay_dir: Path
) -> None:
    remote = relay_dir / "remote"
    names = seed_without_go(remote, 1000)
    assert relay.poll_once().mirrored == []  # seen once: not taken yet
    assert kept_per_file(relay.poller) == 0  # nothing held in memory per file between polls
    assert len(sightings(cfg)) == 1000
    (remote / "OUTTEST" / names[0]).unlink()  # taken by another reader meanwhile
    (remote / "OUTTEST" / names[1]).write_bytes(b"<ACRF>still written</ACRF>")  # grew: waits one more poll
    report = relay.poll_once()
    assert report.counts["mirrored"] == 998 and kept_per_file(relay.poller) == 0
    assert sightings(cfg) == [
        ("OUTTEST", names[1], len(b"<ACRF>still written</ACRF>"))
    ]  # not the 998 taken, not the one gone
    assert [m.split("/")[1] for m in relay.poll_once().mirrored] == [names[1]]
    assert sightings(cfg) == [] and list((remote / "OUTTEST").iterdir()) == []


def test_a_stopped_poll_keeps_the_sightings_of_the_files_it_did_not_reach(
    relay: Relay, cfg: Config, relay_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = seed_without_go(relay_dir / "remote", 3 * poll.BATCH_FILES)
    relay.poll_once()
    real = Poller._take_batch

    def take_then_stop(self: Poller, *args: object) -> list[str]:
        taken = real(self, *args)  # type: ignore[arg-type]
        self.stop.set()
        return taken

    monkeypatch.setattr(Poller, "_take_batch", take_then_stop)
    report = relay.poll_once()
    assert report.stopped and report.counts["mirrored"] == poll.BATCH_FILES
    assert [n for _, n, _ in sightings(cfg)] == names[poll.BATCH_FILES :]  # not reached: as the last poll saw them
    monkeypatch.undo()
    relay.stop.clear()
    assert relay.poll_once().counts["mirrored"] == 2 * poll.BATCH_FILES  # their sizes held: taken at once
    assert sightings(cfg) == []


def test_a_sightings_file_sqlite_cannot_read_is_replaced(relay: Relay, cfg: Config, relay_dir: Path) -> None:
    (cfg.paths.root / "poll-sightings.db").write_bytes(b"not a database" * 100)
    names = seed_without_go(relay_dir / "remote", 3)
    assert relay.poll_once().mirrored == []
    assert [n for _, n, _ in sightings(cfg)] == names
    (cfg.paths.root / "poll-sightings.json").write_text("[]")  # what older versions kept: removed at the start
    Poller(cfg, relay.journal, relay.spool)
    assert not (cfg.paths.root / "poll-sightings.json").exists()


def test_suspicious_files_are_said_once_a_process_and_not_held_in_memory(relay: Relay, relay_dir: Path) -> None:
    out = relay_dir / "remote" / "OUTTEST"
    junk = [f"FO.ACRF.999999.{TODAY}.{i:06d}.T" for i in range(500)]  # a 6-character sequence: suspicious
    for name in junk:
        (out / name).write_bytes(b"x")

    def said() -> list[str]:
        with structlog.testing.capture_logs() as logs:
            report = relay.poll_once()
        assert report.counts["suspicious"] == len(list(out.iterdir()))  # counted at every poll
        return [e["file"] for e in logs if e["event"] == "remote_name_suspicious"]

    assert len(said()) == 500
    assert kept_per_file(relay.poller) == 0  # what was said is on disk, not in memory
    assert said() == []  # said once
    (out / junk[0]).unlink()
    assert said() == []
    (out / junk[0]).write_bytes(b"x")  # back after it was gone: said again
    assert said() == [repr(junk[0])]
    with structlog.testing.capture_logs() as logs:  # another process (a cron'd poll --once) says them again
        Poller(relay.cfg, relay.journal, relay.spool).poll_once(LocalTransport(relay_dir / "remote"))
    assert sum(e["event"] == "remote_name_suspicious" for e in logs) == 500
