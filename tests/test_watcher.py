"""The watcher on a real directory with the real daemon: every way files arrive, each sent once and only complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.daemon import Daemon
from onss_relay.journal import State, open_journal_at
from onss_relay.stages.claim import SettleTracker
from onss_relay.stages.watch import _Hints, filesystem_type, wants_polling
from tests.conftest import fi_name
from tests.helpers import wait_until

MOUNTS = """sysfs /sys sysfs rw 0 0
/dev/vda1 / ext4 rw 0 0
fileserver:/payroll /mnt/payroll nfs4 rw 0 0
//nas/hr /mnt/hr cifs rw 0 0
overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0
sshfs#me@host: /mnt/fuse fuse.sshfs rw 0 0
"""


@pytest.mark.parametrize(
    "path, kind, polls",
    [
        ("/home/payroll/outbox", "ext4", False),
        ("/mnt/payroll/outbox", "nfs4", True),
        ("/mnt/hr", "cifs", True),
        ("/var/lib/docker/overlay2/x/merged/outbox", "overlay", True),
        ("/mnt/fuse/out", "fuse.sshfs", True),
    ],
)
def test_network_filesystems_are_detected(path: str, kind: str, polls: bool) -> None:
    assert filesystem_type(Path(path), MOUNTS) == kind
    assert wants_polling("auto", Path(path), MOUNTS) is polls
    assert wants_polling("true", Path(path), MOUNTS) and not wants_polling("false", Path(path), MOUNTS)


def test_settle_uses_a_monotonic_clock_from_first_sighting() -> None:
    now = [100.0]
    tracker = SettleTracker(2.0, clock=lambda: now[0])
    st = os.stat(__file__)
    assert not tracker.settled("a", st)
    now[0] += 1.9
    assert not tracker.settled("a", st)
    now[0] += 0.2
    assert tracker.settled("a", st)
    changed = os.stat_result((*st[:6], st.st_size + 1, *st[7:]))
    assert not tracker.settled("a", changed)  # any change restarts the clock


def test_settle_zero_trusts_close_events_only_while_they_flow() -> None:
    tracker = SettleTracker(0)
    st = os.stat(__file__)
    assert tracker.settled("x", st)  # no observer (send --once): 0 trusts what is there
    tracker.events = True
    assert not tracker.settled("y", st)
    tracker.trust("y")
    assert tracker.settled("y", st)
    tracker.distrust("y")  # written again after the close
    assert not tracker.settled("y", st)


@contextlib.contextmanager
def running(cfg: Config) -> Iterator[Daemon]:
    daemon = Daemon(cfg)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    assert wait_until(lambda: bool(daemon.stages), 10)
    try:
        yield daemon
    finally:
        daemon.stop.set()
        thread.join(15)
        assert not thread.is_alive()


def sent_names(cfg: Config) -> list[str]:
    j = open_journal_at(cfg.paths.journal_path)
    try:
        return [r.go_name for r in j.sets_in(State.SENT) if r.archived]
    finally:
        j.close()


def sent_count(cfg: Config) -> int:
    return len(sent_names(cfg))


def history_sent_once(cfg: Config) -> None:
    j = open_journal_at(cfg.paths.journal_path)
    try:
        for row in j.sets_in(*State):
            assert [h[1] for h in j.history(row.go_name)].count("sent") == 1, row.go_name
    finally:
        j.close()


def configured(relay_dir: Path, **overrides: str) -> Config:
    env = {f"ONSS_RELAY__{k.upper()}": v for k, v in overrides.items()}
    env.setdefault("ONSS_RELAY__POLL__INTERVAL", "1h")
    return load_config(relay_dir / "config.toml", environ=env)


def remote_fi(relay_dir: Path, name: str) -> bytes:
    return (relay_dir / "remote" / "INTEST" / name).read_bytes()


def test_a_read_wakes_the_claim_scan_only_when_a_scan_waited_for_the_file(tmp_path: Path) -> None:
    """Real inotify. Each read of a claimed declaration (the claim's checks, the signer's copy, the upload's
    checks at its gates) ends in a close-nowrite; each woke a claim scan, and those scans competed with the set's
    upload for the interpreter (5 scans per set, 2 now). A close-nowrite wakes the scan only when it ends the last
    open of a file a settle check found open."""
    from watchdog.observers import Observer

    tracker = SettleTracker(0.0)
    tracker.events = True
    wake = threading.Event()
    observer = Observer()
    observer.schedule(_Hints(tracker, tmp_path, wake), str(tmp_path), recursive=False)
    observer.start()
    f = tmp_path / fi_name(1)
    try:
        with f.open("wb") as writer:  # a settle check finds it open while it is written…
            assert wait_until(lambda: tracker.busy(f.name), 5)
            assert not tracker.settled(f.name, f.stat())
            writer.write(b"<x/>")
        assert wait_until(lambda: tracker.settled(f.name, f.stat()), 5)  # …and its writer's close trusts it
        time.sleep(0.5)  # the folder's own events, after the close, are in too
        wake.clear()
        with f.open("rb") as reader:  # a read no scan waited for
            assert wait_until(lambda: tracker.busy(f.name), 5)
            reader.read()
        assert wait_until(lambda: not tracker.busy(f.name), 5)
        assert not wait_until(wake.is_set, 1.0)
        with f.open("rb"):  # held open by a reader (a writer, for all inotify says): the scan waits for it
            assert wait_until(lambda: tracker.busy(f.name), 5)
            assert not tracker.settled(f.name, f.stat())
            assert not wait_until(wake.is_set, 1.0)
        assert wait_until(wake.is_set, 5)  # its close: the scan looks again, and finds it settled
        assert tracker.settled(f.name, f.stat())
    finally:
        observer.stop()
        observer.join(5)


def test_written_in_one_go_renamed_and_copied(relay_dir: Path, tmp_path: Path) -> None:
    cfg = configured(relay_dir)
    outbox = cfg.paths.outbox_dir
    with running(cfg):
        (outbox / fi_name(1)).write_bytes(b"<one-go/>")
        temp = outbox / (fi_name(2) + ".tmp")
        temp.write_bytes(b"<renamed/>")
        os.rename(temp, outbox / fi_name(2))
        src = tmp_path / "src.xml"
        src.write_bytes(b"<copied>%s</copied>" % (b"<x/>" * 10000))
        subprocess.run(["cp", str(src), str(outbox / fi_name(3))], check=True)
        assert wait_until(lambda: sent_count(cfg) == 3, 20)
    assert remote_fi(relay_dir, fi_name(1)) == b"<one-go/>"
    assert remote_fi(relay_dir, fi_name(2)) == b"<renamed/>"
    assert remote_fi(relay_dir, fi_name(3)) == src.read_bytes()
    history_sent_once(cfg)


def slow_writer(path: Path, chunks: int, pause: float, keep_open: bool) -> None:
    if keep_open:
        with path.open("wb") as f:
            for i in range(chunks):
                f.write(b"%d" % (i % 10))
                f.flush()
                time.sleep(pause)
    else:
        for i in range(chunks):
            with path.open("ab") as f:
                f.write(b"%d" % (i % 10))
            time.sleep(pause)


@pytest.mark.slow
@pytest.mark.parametrize("settle, keep_open", [("1s", False), ("0s", True)])
def test_a_slow_appender_is_never_taken_half_written(relay_dir: Path, settle: str, keep_open: bool) -> None:
    cfg = configured(relay_dir, watch__settle=settle)
    path = cfg.paths.outbox_dir / fi_name(1)
    with running(cfg):
        slow_writer(path, 12, 0.3, keep_open)
        written = path.read_bytes()
        assert wait_until(lambda: sent_count(cfg) == 1, 20)
    assert remote_fi(relay_dir, fi_name(1)) == written and len(written) == 12


@pytest.mark.slow
def test_a_thousand_dropped_at_once(relay_dir: Path) -> None:
    cfg = configured(relay_dir)
    with running(cfg):
        for i in range(1, 1001):
            p = cfg.paths.outbox_dir / f".{fi_name(i)}.tmp"
            p.write_bytes(b"<d n='%d'/>" % i)
            os.rename(p, cfg.paths.outbox_dir / fi_name(i))
        assert wait_until(lambda: sent_count(cfg) == 1000, 120, interval=0.5)
    assert list(cfg.paths.outbox_dir.iterdir()) == []
    assert len(list((relay_dir / "remote" / "INTEST").glob("GO.*"))) == 1000
    history_sent_once(cfg)


@pytest.mark.slow
def test_files_dropped_while_stopped_are_found_at_start(relay_dir: Path) -> None:
    cfg = configured(relay_dir, watch__settle="0s", watch__rescan="1h")
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    for i in (1, 2):
        (cfg.paths.outbox_dir / fi_name(i)).write_bytes(b"<x/>")
    with running(cfg):
        assert wait_until(lambda: sent_count(cfg) == 2, 20)


@pytest.mark.slow
def test_polling_observer(relay_dir: Path) -> None:
    cfg = configured(relay_dir, watch__polling="true", watch__settle="1s")
    with running(cfg) as daemon:
        (cfg.paths.outbox_dir / fi_name(1)).write_bytes(b"<polled/>")
        assert wait_until(lambda: sent_count(cfg) == 1, 20)
        assert daemon.relay is not None and not daemon.relay.claimer.tracker.events


@pytest.mark.slow
def test_twenty_concurrent_submits_get_distinct_sequences(relay_dir: Path) -> None:
    src = relay_dir / "d.xml"
    src.write_bytes(b"<d/>")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "onss_relay.cli",
                "submit",
                str(src),
                "--app",
                "DMFA",
                "--env",
                "T",
                "--config",
                str(relay_dir / "config.toml"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(20)
    ]
    names = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    seqs = [n.split(".")[4] for n in names]
    assert len(set(seqs)) == 20 and sorted(seqs) == [f"{i:05d}" for i in range(1, 21)]
    assert len(list((relay_dir / "spool" / "outbox").iterdir())) == 20


def test_nothing_leaves_the_outbox_except_into_sent_or_failed(relay_dir: Path) -> None:
    cfg = configured(relay_dir)
    names = [
        fi_name(1),
        fi_name(2, sender="654321"),
        "readme.txt",
        fi_name(3, total=2, part=1),
        fi_name(3, total=2, part=2),
    ]
    with running(cfg):
        for n in names:
            (cfg.paths.outbox_dir / n).write_bytes(b"<x/>")
        assert wait_until(
            lambda: sent_count(cfg) == 2 and len(list(cfg.paths.failed_dir.glob("*.reason.json"))) == 2, 20
        )
    kept = {p.name for d in (cfg.paths.outbox_dir, cfg.paths.sent_dir, cfg.paths.failed_dir) for p in d.rglob("*")}
    assert set(names) <= kept
    shutil.rmtree(cfg.paths.root)


def test_an_event_queue_overflow_triggers_a_full_scan(relay_dir: Path) -> None:
    import logging
    import threading as th

    from onss_relay.journal import open_journal_at
    from onss_relay.spool import Spool
    from onss_relay.stages.claim import Claimer
    from onss_relay.stages.watch import Watcher

    cfg = configured(relay_dir)
    spool = Spool(cfg.paths)
    spool.create()
    wake = th.Event()
    watcher = Watcher(Claimer(cfg, open_journal_at(cfg.paths.journal_path), spool), "false", wake)
    watcher.start()
    try:
        wake.clear()
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert wake.is_set()
    finally:
        watcher.stop()


def test_a_dead_watchdog_thread_is_said_and_started_again(relay_dir: Path) -> None:
    """An exception inside watchdog ends its thread and events stop without a word (seen in CI: a stepped clock
    made its delayed queue's sleep fail). The daemon says so in one line, starts a new watch, and what is dropped
    afterwards goes out on events again."""
    cfg = configured(relay_dir)
    with running(cfg) as daemon:
        assert wait_until(lambda: daemon.watcher is not None and daemon.watcher._observer is not None, 10)
        assert daemon.watcher is not None
        first = daemon.watcher._observer
        assert first is not None
        (emitter,) = first.emitters

        def fail(timeout: float) -> None:
            raise OSError(22, "Invalid argument")

        emitter.queue_events = fail  # type: ignore[method-assign]
        (cfg.paths.outbox_dir / fi_name(1)).write_bytes(b"<before/>")
        assert wait_until(lambda: daemon.watcher is not None and daemon.watcher._observer not in (None, first), 10)
        (cfg.paths.outbox_dir / fi_name(2)).write_bytes(b"<after/>")
        assert wait_until(lambda: sent_count(cfg) == 2, 20)
        assert not first.is_alive()
