"""Released originals are held, never unlinked at once (held.py): whatever the watcher missed (a writer that
opened its file before the relay started watching, events lost to a queue overflow), what a writer adds after
the copy was sent ends whole in failed/ with a reason, never in an unlinked inode. Black-box: the real daemon,
blind to other users' /proc entries as the shipped unit is, and a writer running as another user."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onss_relay.config import Config, Duration, load_config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from tests.conftest import fi_name
from tests.fake_transport import FakeTransport
from tests.helpers import FAKETIME_SLEEP, Daemon, run_cli, state_of, wait_log, wait_until
from tests.test_outbox_writers import AS_NOBODY, PROC_BLIND, go_of

HOLD = {"ONSS_RELAY__WATCH__SETTLE": "1s", "ONSS_RELAY__WATCH__KEEP_RELEASED": "10s"}


def held_original(cfg: Config, name: str) -> Path:
    """Given the config and an FI name, return where its original is held (held/<batch>/, issue 27)."""
    [path] = (cfg.paths.root / "held").glob(f"batch-*/{name}")
    return path


def nothing_lost(relay_dir: Path, fi: str, whole: bytes) -> str | None:
    """Given the spool and a declaration its writer finished, return what is wrong, or None when the whole
    bytes were sent, or are kept in failed/ with a reason saying the ONSS got an earlier version."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    remote = relay_dir / "remote" / "INTEST" / fi
    if remote.exists() and remote.read_bytes() == whole:
        return None
    kept = cfg.paths.failed_dir / fi
    if not kept.exists():
        return f"{fi}: neither sent whole nor kept in failed/ ({sorted(os.listdir(cfg.paths.failed_dir))})"
    reason = json.loads((cfg.paths.failed_dir / f"{fi}.reason.json").read_text())
    if kept.read_bytes() != whole or "earlier version" not in reason["detail"]:
        return f"{fi}: kept {kept.read_bytes()!r} with {reason}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("settle_unknown", ["1s", "20s"])
def test_a_writer_that_opened_its_file_before_the_relay_started_loses_nothing(
    relay_dir: Path, settle_unknown: str
) -> None:
    """With watch.settle_unknown longer than the writer's pause the set is sent whole (the relay never saw the
    file open, so it waits); shorter, its head is sent and the rest kept whole in failed/ (the held original)."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    fi = cfg.paths.outbox_dir / fi_name(1)
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    script = f"exec 3>{fi}; echo head >&3; sleep 6; echo tail >&3"  # opened before the watch began
    writer = subprocess.Popen([*AS_NOBODY, "sh", "-c", script])
    try:
        assert wait_until(lambda: fi.exists() and fi.stat().st_size > 0, 10)
        env = HOLD | {"ONSS_RELAY__WATCH__SETTLE_UNKNOWN": settle_unknown}
        d = Daemon(relay_dir / "config.toml", relay_dir / "daemon.log", env, True, PROC_BLIND)
        d.start()
        assert wait_until(lambda: state_of(d.config, go_of(fi.name)) == State.SENT, 40), d.log.read_text()
        assert writer.wait(20) == 0
        settled = wait_until(lambda: nothing_lost(relay_dir, fi.name, b"head\ntail\n") is None, 30)
        assert settled, nothing_lost(relay_dir, fi.name, b"head\ntail\n")
        if settle_unknown == "20s":
            assert (relay_dir / "remote" / "INTEST" / fi.name).read_bytes() == b"head\ntail\n"
        assert d.stop() == 0
    finally:
        writer.kill()


@pytest.mark.slow
def test_a_file_held_open_across_an_event_queue_overflow_is_sent_whole(relay_dir: Path) -> None:
    """After an overflow its open state is unknown: it waits watch.settle_unknown (its writer's close ends the
    wait); were it sent half, the held original would keep the rest (nothing_lost)."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    fi = cfg.paths.outbox_dir / fi_name(1)
    env = HOLD | {"ONSS_RELAY__WATCH__SETTLE_UNKNOWN": "20s"}
    d = Daemon(relay_dir / "config.toml", relay_dir / "daemon.log", env, True, PROC_BLIND)
    d.start()
    assert wait_log(d.log, '"watching"'), d.log.read_text()[-2000:]
    go = cfg.paths.outbox_dir / ".go"  # a temporary name: never claimed, its events still queued
    script = f"exec 3>{fi}; echo head >&3; while [ ! -e {go} ]; do sleep 0.1; done; sleep 2; echo tail >&3"
    writer = subprocess.Popen([*AS_NOBODY, "sh", "-c", script])
    try:
        assert wait_until(lambda: fi.exists() and fi.stat().st_size > 0, 10)
        flood = cfg.paths.outbox_dir / ".flood"
        assert d.proc is not None
        # the daemon paused (a frozen VM) while a temporary file is opened and closed more times than the kernel
        # queues events (fs.inotify.max_queued_events, 16,384): the queue overflows whatever the machine's load
        # (a daemon reading as fast as the flood came kept up with it on a loaded machine: no overflow)
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(limit):
                os.close(os.open(flood, os.O_WRONLY | os.O_CREAT))
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert wait_log(d.log, "event_queue_overflow"), "the flood did not overflow the event queue"
        go.touch()
        assert writer.wait(30) == 0
        settled = wait_until(lambda: nothing_lost(relay_dir, fi.name, b"head\ntail\n") is None, 20)
        assert settled, nothing_lost(relay_dir, fi.name, b"head\ntail\n")
        assert wait_until(lambda: state_of(d.config, go_of(fi.name)) == State.SENT, 30), d.log.read_text()[-3000:]
        assert (relay_dir / "remote" / "INTEST" / fi.name).read_bytes() == b"head\ntail\n"
        assert d.stop() == 0
    finally:
        writer.kill()


def send_touching_the_original(cfg: Config, touch: Callable[[str, Path], None]) -> tuple[Relay, dict[Any, bytes]]:
    """Send one declaration through the real stages over a fake remote that calls ``touch`` with the name of
    each file written and the outbox original; return the relay and what the remote got."""
    files: dict[tuple[str, str], bytes] = {}
    relay = Relay(cfg)
    fi = relay.spool.outbox / fi_name(1)
    relay.connect = lambda: FakeTransport(files, [], on_write=lambda name: touch(name, fi))
    relay.uploader.pool.connect = relay.connect
    fi.write_bytes(b"<DmfA/>")
    relay.send_once(wait_for_settle=False)
    return relay, files


def test_a_chmod_or_a_hard_link_alone_changes_nothing_that_was_sent(cfg: Config, tmp_path: Path) -> None:
    def metadata_only(name: str, fi: Path) -> None:  # a backup tool's link, an admin's chmod: ctime changes
        if name.startswith("FS"):
            os.link(fi, tmp_path / "backup")
        elif name.startswith("GO"):
            fi.chmod(0o600)

    relay, files = send_touching_the_original(cfg, metadata_only)
    try:
        row = relay.journal.get_set(go_of(fi_name(1)))
        assert row is not None and row.state == State.SENT, row
        assert ("INTEST", go_of(fi_name(1))) in files
        assert not (cfg.paths.failed_dir / f"{fi_name(1)}.reason.json").exists()
        assert held_original(cfg, fi_name(1)).read_bytes() == b"<DmfA/>"  # held, to be deleted later
    finally:
        relay.close()


def test_a_held_original_rewritten_with_its_size_and_mtime_kept_goes_to_failed(cfg: Config) -> None:
    relay, _ = send_touching_the_original(cfg, lambda name, fi: None)
    try:
        held = held_original(cfg, fi_name(1))
        st = held.stat()
        held.write_bytes(b"<DmfB/>")  # same size: only the bytes (and the ctime) tell
        os.utime(held, ns=(st.st_atime_ns, st.st_mtime_ns))
        relay.claimer.apply(dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, keep_released=Duration(0))))
        relay.claimer.sweep_held()
        assert not held.exists()
        assert (cfg.paths.failed_dir / fi_name(1)).read_bytes() == b"<DmfB/>"
        why = json.loads((cfg.paths.failed_dir / f"{fi_name(1)}.reason.json").read_text())
        assert why["reason"] == "changed after it was sent" and "earlier version" in why["detail"]
    finally:
        relay.close()


def test_a_held_original_still_unchanged_is_deleted_after_keep_released(cfg: Config) -> None:
    relay, _ = send_touching_the_original(cfg, lambda name, fi: None)
    try:
        held = held_original(cfg, fi_name(1))
        relay.claimer.sweep_held()
        assert held.exists()  # watch.keep_released (1h) not over
        relay.claimer.apply(dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, keep_released=Duration(0))))
        relay.claimer.sweep_held()
        assert list((cfg.paths.root / "held").iterdir()) == []
        assert list(cfg.paths.failed_dir.iterdir()) == []
    finally:
        relay.close()


def test_a_wall_clock_stepped_forward_never_releases_a_held_original_early(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP stepping the clock 2 h forward (a machine whose hardware clock was behind, a VM resumed) made every
    held original look held past watch.keep_released (1 h): deleted at the next sweep while a writer the relay
    could not see may still append to it. The time held is counted on the boot clock."""
    relay, _ = send_touching_the_original(cfg, lambda name, fi: None)
    try:
        held = held_original(cfg, fi_name(1))
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() + 7200)
        relay.claimer.sweep_held()
        assert held.exists(), "deleted after a minute of holding: the wall clock stepped, not the time held"
        monkeypatch.undo()
        relay.claimer.apply(dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, keep_released=Duration(0))))
        relay.claimer.sweep_held()
        assert not held.exists()  # held long enough on the boot clock: released as before
    finally:
        relay.close()


# -- a cron'd send --once counts watch.incomplete_after across its runs (first sightings kept in the spool) ---


def test_send_once_from_cron_quarantines_an_incomplete_set_and_broken_xml_across_runs(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    env = {"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "2s"}
    lone = fi_name(1, total=2, part=1)
    broken = fi_name(2)
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / lone).write_bytes(b"<DmfA/>")
    (cfg.paths.outbox_dir / broken).write_bytes(b"<DmfA><unclosed>")
    for n in (lone, broken):  # old mtimes (`mv` keeps them) must not count
        os.utime(cfg.paths.outbox_dir / n, (time.time() - 86400,) * 2)
    first = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"), env=env)
    assert not (cfg.paths.failed_dir / f"{lone}.reason.json").exists(), first.stdout + first.stderr
    time.sleep(2.5)
    second = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"), env=env)
    assert json.loads((cfg.paths.failed_dir / f"{lone}.reason.json").read_text())["reason"] == "incomplete set", (
        second.stdout + second.stderr
    )
    assert json.loads((cfg.paths.failed_dir / f"{broken}.reason.json").read_text())["reason"] == "not well-formed XML"
    assert second.returncode == 1 and "quarantined 2 set(s) (2 file(s) in failed/)" in second.stdout, second.stdout


# -- a stage failing on a locked journal is not said recovered while the lock is held ------------------------


@pytest.mark.slow
def test_send_once_from_cron_counts_incomplete_after_on_the_boot_clock_across_runs(relay_dir: Path) -> None:
    """The first sightings kept between two cron'd runs were aged by the wall clock: NTP stepping it 2 h forward
    between them quarantined a set whose first part had been seen seconds before as incomplete (watch.incomplete_after
    1 h). Within one boot the time between runs is the boot clock's (faketime leaves it alone here)."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    env = {"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "1h"}
    lone = fi_name(1, total=2, part=1)
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / lone).write_bytes(b"<DmfA/>")
    first = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    stepped = {**env, "DONT_FAKE_MONOTONIC": "1", **FAKETIME_SLEEP}  # the wall clock jumps, the boot clock does not
    second = run_cli(
        "send", "--once", "--config", str(relay_dir / "config.toml"), env=stepped, wrapper=["faketime", "-f", "+2h"]
    )
    assert second.returncode == 0 and (cfg.paths.outbox_dir / lone).exists(), second.stdout + second.stderr
    assert not (cfg.paths.failed_dir / f"{lone}.reason.json").exists()


def test_a_claim_refused_by_a_locked_journal_is_not_said_recovered_until_it_commits(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    d = Daemon(relay_dir / "config.toml", relay_dir / "daemon.log", {"ONSS_RELAY__WATCH__SETTLE": "0s"})
    d.start()
    assert wait_log(d.log, '"watching"'), d.log.read_text()[-2000:]
    fi = cfg.paths.outbox_dir / fi_name(1)
    try:
        db = sqlite3.connect(cfg.paths.journal_path, timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")  # another tool holding the journal (a backup, sqlite3 by hand)
        try:
            fi.write_bytes(b"<Dimona/>")
            assert wait_log(d.log, '"stage_retry"', 1, 45), d.log.read_text()[-3000:]
            time.sleep(3)  # events and rescans go on meanwhile
            during = d.log.read_text()
        finally:
            db.execute("ROLLBACK")
            db.close()
        assert '"stage_recovered"' not in during, during[-3000:]
        assert wait_until(lambda: state_of(d.config, go_of(fi.name)) == State.SENT, 30), d.log.read_text()[-3000:]
        assert wait_log(d.log, '"stage_recovered"', 1, 10)
    finally:
        assert d.stop() == 0


def test_an_outbox_on_another_filesystem_holds_its_originals_in_its_own_hidden_folder(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename
    spool_held = cfg.paths.root / "held"

    def across_filesystems(src: Any, dst: Any) -> None:  # what rename(2) says from another mount
        if spool_held in Path(dst).parents:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    monkeypatch.setattr("onss_relay.held.os.rename", across_filesystems)
    relay, _ = send_touching_the_original(cfg, lambda name, fi: None)
    try:
        held = cfg.paths.outbox_dir / ".onss-relay-held" / fi_name(1)
        assert held.read_bytes() == b"<DmfA/>" and not list(spool_held.glob(f"*/{fi_name(1)}"))
        relay.claimer.scan()  # the hidden folder is not a declaration: nothing quarantined, nothing claimed
        assert list(cfg.paths.failed_dir.iterdir()) == []
        relay.claimer.apply(dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, keep_released=Duration(0))))
        relay.claimer.sweep_held()
        assert not held.exists() and list(held.parent.iterdir()) == []
    finally:
        relay.close()


# -- issue 27: the originals of a batch of sent sets are held with shared folder fsyncs ---------------------------


def test_releasing_a_batch_of_originals_fsyncs_the_hold_folder_per_batch_not_per_set(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty sent sets released together: every original held, with one record for the batch (size, digest,
    inode of each), durable before the renames and written once (issue 27: the inode is the one before the
    rename, which keeps it; one file and one folder created per batch, not a record per set), and the hold
    folders fsynced twice for the batch (held/ for the record, the batch's folder for the renames), not per set (the cost that made the archive the largest stage of a declaration)."""
    relay = Relay(cfg)
    try:
        for i in range(1, 21):
            (relay.spool.outbox / fi_name(i)).write_bytes(b"<DmfA/>")
        relay.claim()
        relay.signer.sign_queued()
        rows = relay.journal.sets_in(State.SIGNED)
        assert len(rows) == 20
        held_dir = cfg.paths.root / "held"
        fsynced: list[str] = []
        real_fsync = os.fsync

        def counting_fsync(fd: int) -> None:
            fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", counting_fsync)
        relay.spool.archive_sets(rows)
        monkeypatch.undo()
        [batch] = held_dir.glob("*.held-batch.json")
        folder = held_dir / batch.name.removesuffix(".held-batch.json")
        assert fsynced.count(str(held_dir)) == 1 and fsynced.count(str(folder)) == 1, fsynced  # record, renames
        records = [p for p in fsynced if ".held" in p and p.endswith(".tmp")]
        assert len(records) == 1 and ".held-batch.json." in records[0], fsynced  # one record for the batch
        entries = json.loads(batch.read_text())["held"]
        assert sorted(entries) == sorted(fi_name(i) for i in range(1, 21))
        assert not list(held_dir.glob("*.held.json"))
        for i in range(1, 21):
            held = folder / fi_name(i)
            record = entries[fi_name(i)]
            assert held.read_bytes() == b"<DmfA/>" and not (relay.spool.outbox / fi_name(i)).exists()
            assert record["ino"] == held.stat().st_ino and record["size"] == 7 and record["digest"]
    finally:
        relay.close()
