"""Fault injection against the real daemon and a real sshd. Quick by default (CI);
ONSS_RELAY_FAULTS=full python3 -m pytest tests/faults  runs the long version (more sets, more faults)."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from onss_relay.journal import State, open_journal_at
from tests.conftest import fi_name
from tests.faults.harness import FULL, FaultWorld, sleep_random
from tests.fixtures.sshd import SshServer
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

SETS = 120 if FULL else 40
RESPONSES = 60 if FULL else 15


@pytest.fixture
def world(relay_dir: Path, sshd: SshServer, client_keys: dict[str, Path]) -> FaultWorld:
    w = FaultWorld(relay_dir, sshd, client_keys["rsa"])
    w.declarations(SETS)
    w.server_responses(RESPONSES)
    return w


def test_sigkill_at_random_instants(world: FaultWorld) -> None:
    world.set_quiet_period("500ms")  # a forwarding proxy: nothing of a killed process arrives late
    for _ in range(50 if FULL else 12):
        world.start()
        sleep_random(world, 0.0, 0.6)
        world.kill()
    world.finish()


def test_connections_dropped(world: FaultWorld) -> None:
    world.start()
    for _ in range(10 if FULL else 4):
        sleep_random(world, 0.1, 0.6)
        world.proxy.drop_all()
    world.finish()


def test_connections_stalled(world: FaultWorld) -> None:
    world.start()
    for _ in range(3 if FULL else 1):
        sleep_random(world, 0.1, 0.5)
        world.proxy.stall(5)  # longer than remote.timeout = 3s: the relay must give up and reconnect
        time.sleep(5)
    world.finish()


def test_connections_truncated(world: FaultWorld) -> None:
    world.proxy.cut_after = 150_000
    world.start()
    time.sleep(3 if FULL else 1.5)
    world.proxy.cut_after = None
    world.finish()


def test_remote_folder_read_only(world: FaultWorld) -> None:
    (world.sshd.root / "readonly").write_text("")
    world.start()
    assert wait_until(lambda: "permission denied" in world.log.read_text(), 20)
    time.sleep(1)
    (world.sshd.root / "readonly").unlink()
    world.finish()


def test_journal_locked_by_another_process(world: FaultWorld) -> None:
    world.start()
    time.sleep(0.5)
    holder = sqlite3.connect(world.cfg.paths.journal_path, timeout=30, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    time.sleep(35 if FULL else 3)  # the full run outlasts SQLite's 30 s busy timeout
    holder.execute("ROLLBACK")
    holder.close()
    world.finish()


def test_local_disk_full(world: FaultWorld, tmp_path: Path) -> None:
    """The spool on a small tmpfs that fills up; freeing space lets everything through."""
    mount = tmp_path / "small"
    mount.mkdir()
    old_root = world.cfg.paths.root
    used = sum(p.stat().st_size + 4096 for p in old_root.rglob("*"))  # a tmpfs page per file at least
    size = used * 2 + (8 << 20)  # the spool always fits (its size depends on the seed), then the filler fills it
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    assert r.returncode == 0, f"cannot mount a tmpfs for the disk-full test: {r.stderr.strip()}"
    try:
        shutil.copytree(old_root, mount / "spool")
        world.config.write_text(world.config.read_text().replace('root = "spool"', f'root = "{mount / "spool"}"'))
        filler = mount / "filler"
        try:
            with filler.open("wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass  # the disk is full now
        shutil.rmtree(old_root)
        world.start(until="relay_waiting")  # it cannot start working: it says why and waits for room
        time.sleep(1)
        log = world.log.read_text()
        assert "disk full" in log and "Traceback" not in log, log[-2000:]
        assert world.proc is not None and world.proc.poll() is None, "the daemon stopped on a full disk"
        filler.unlink()
        world.finish()
    finally:
        try:
            world.stop()
        finally:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_clock_jumps(world: FaultWorld, tmp_path: Path) -> None:
    """Wall-clock jumps (NTP step, VM resume) while running: libfaketime moves the daemon's clock."""
    lib = next(iter(Path("/usr/lib").rglob("libfaketime.so.1")), None)
    assert lib is not None, "libfaketime is not installed (apt-get install -y faketime; .ci/run does)"
    stamp = tmp_path / "faketime"
    stamp.write_text("+0")
    env = {
        "LD_PRELOAD": str(lib),
        "FAKETIME_TIMESTAMP_FILE": str(stamp),
        "FAKETIME_NO_CACHE": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    world.start(env=env)
    for jump in ("+1d", "-1m", "+3h", "+0"):
        sleep_random(world, 0.2, 0.8)
        stamp.write_text(jump)
    threading.Event().wait(0.5)
    world.finish(timeout=240)  # a loaded CI machine: 120 s ran out once with sets still going out one by one


def test_answers_while_down_and_recovery_in_any_order(world: FaultWorld) -> None:
    """Items 1 and 5 of the single-faults issue: the transfer point consumes and answers sets while the daemon
    is killed at random instants, sometimes a cron'd `poll --once` runs before the restart, sometimes the
    restart's upload recovery runs first. Every set ends with its answer, each GO written once."""
    world.answering = True
    world.set_quiet_period("500ms")  # a forwarding proxy: nothing of a killed process arrives late
    for _ in range(8 if FULL else 4):
        world.start()
        sleep_random(world, 0.2, 1.0)
        world.kill()
        world.answer()
        if world.rng.random() < 0.6:
            r = world.poll_once()
            assert "Traceback" not in r.stderr, r.stderr
    world.finish()


def test_declarations_removed_after_their_claim(world: FaultWorld) -> None:
    """Item 2: an operator removes declarations the relay has claimed; those sets fail saying so, the others go."""
    world.start()
    outbox = world.cfg.paths.outbox_dir
    deadline = time.monotonic() + 10
    while len(world.removed) < 3 and time.monotonic() < deadline:
        j = open_journal_at(world.cfg.paths.journal_path) if world.cfg.paths.journal_path.exists() else None
        if j is not None:
            try:
                claimed = [r for r in j.sets_in(State.QUEUED, State.SIGNED) if len(r.parts) == 1]
            finally:
                j.close()
            for row in claimed[:2]:
                with contextlib.suppress(FileNotFoundError):
                    (outbox / row.parts[0]).unlink()
                    world.removed[row.parts[0]] = row.go_name
        time.sleep(0.01)
    assert world.removed, "the relay sent everything before any claimed declaration could be removed"
    world.finish()


def test_slow_writers_that_pause_with_their_file_open(world: FaultWorld) -> None:
    """Item 4: some declarations are written by processes that pause mid-file, holding it open; every byte of
    the final file is what is sent, whatever the settle delay says."""
    world.start()
    writers = []
    for seq in range(SETS + 1, SETS + 4):
        name = fi_name(seq, "T")
        body = b"<DmfA>" + b"<W/>" * world.rng.randrange(100, 3000) + b"</DmfA>"
        world.originals[name] = body
        world.gos.append("GO" + name[2:-2])
        (world.dir / f"{name}.body").write_bytes(body)
        target = world.cfg.paths.outbox_dir / name
        writers.append(
            subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(world.dir / f"{name}.body"), "6"])
        )
    for w in writers:
        assert w.wait(30) == 0
    world.finish()


SLOW_WRITER = """
import sys, time
from pathlib import Path
path = Path(sys.argv[1])
body = Path(sys.argv[2]).read_bytes()
with open(path, "wb") as f:
    f.write(body[:43]); f.flush()
    time.sleep(float(sys.argv[3]))
    f.write(body[43:])
"""
