"""Temp files of killed runs (review of issue 29): a run SIGKILLed while it wrote left its per-process temp
``.NAME.HOST-PID.tmp`` in work/ for ever. At start the relay removes those of its own host whose process is gone
(or whose pid now runs a younger process), never another host's or a live process's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onss_relay.durable import HOST, temp_name
from onss_relay.orphan_temps import process_start, remove_orphan_temps
from tests.conftest import fi_name
from tests.helpers import run_cli


def test_a_temp_left_by_a_killed_signer_is_removed_at_the_next_start(relay_dir: Path) -> None:
    config, spool = relay_dir / "config.toml", relay_dir / "spool"
    (spool / "outbox").mkdir(parents=True)
    (spool / "outbox" / fi_name(1)).write_bytes(b"<Dimona>1</Dimona>")
    # the signer SIGKILLs itself at its first durable rename: its FI copy renamed, its FS still a temp
    crash = {"ONSS_RELAY_CRASH_AT_COMMIT": "1", "ONSS_RELAY_CRASH_AT_COMMIT_AFTER": "rename"}
    run_cli("send", "--once", "--config", str(config), env=crash)
    left = [n for n in os.listdir(spool / "work") if n.endswith(".tmp")]
    assert left and all(f".{HOST}-" in n for n in left), os.listdir(spool / "work")
    for n in left:  # unwritten for more than a minute: within it, a live process of another pid namespace may own it
        os.utime(spool / "work" / n, (time.time() - 120,) * 2)
    again = run_cli("send", "--once", "--config", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [n for n in os.listdir(spool / "work") if n.endswith(".tmp")]
    assert '"event": "orphan_temps_removed"' in again.stderr and f'"count": {len(left)}' in again.stderr
    assert (relay_dir / "remote" / "INTEST" / ("GO" + fi_name(1)[2:-2])).exists()  # and the set went out


def test_only_this_host_s_temps_of_processes_gone_are_removed(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        dead_pid = int(gone.stdout)
        hour_ago = time.time() - 3600
        init_started = process_start(1)
        assert init_started is not None and init_started < time.time() - 120
        init_wrote = init_started + 1
        names = {
            "dead": f".FI.A.{HOST}-{dead_pid}.tmp",
            "other host": f".FI.B.{HOST}x-{dead_pid}.tmp",
            "alive, the one that wrote it": f".FI.C.{HOST}-1.tmp",  # init: started before it wrote
            "alive, older than the temp": f".FI.D.{HOST}-{sleeper.pid}.tmp",  # the pid was reused
            "alive, reused, just written": f".FI.E.{HOST}-{sleeper.pid}.tmp",
            "ours": temp_name("FI.F"),
            "dead, with its token": f".FI.H.{HOST}-{dead_pid}-tab12cd.tmp",
            "dead, just written": f".FI.I.{HOST}-{dead_pid}-t0a0b0c.tmp",  # another pid namespace's, perhaps
            "not a temp": f"FI.G.{HOST}-{dead_pid}",
        }
        for what, name in names.items():
            (tmp_path / name).write_bytes(b"x")
            written = {
                "alive, reused, just written": time.time() - 30,
                "dead, just written": time.time() - 30,
                "alive, the one that wrote it": init_wrote,
            }
            os.utime(tmp_path / name, (written.get(what, hour_ago),) * 2)
        removed = remove_orphan_temps(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    orphans = ("dead", "alive, older than the temp", "dead, with its token")
    assert sorted(p.name for p in removed) == sorted(names[w] for w in orphans)
    assert sorted(os.listdir(tmp_path)) == sorted(n for w, n in names.items() if w not in orphans)


def test_a_temp_left_in_the_outbox_by_a_killed_submit_is_removed_at_the_next_start(relay_dir: Path) -> None:
    """A `submit` SIGKILLed while it copied a declaration left its hidden ``.FI….tmp`` (as large as the file) in the
    outbox for ever; it writes under its own .NAME.HOST-PID.tmp now, which the next start removes."""
    config, outbox = relay_dir / "config.toml", relay_dir / "spool" / "outbox"
    content = relay_dir / "declaration.xml"
    content.write_bytes(b"<DmfA>" + b"x" * (64 << 20) + b"</DmfA>")
    command = [sys.executable, "-m", "onss_relay.cli", "submit", str(content), "--app", "DMFA", "--env", "T"]
    proc = subprocess.Popen([*command, "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temps: list[str] = []
    deadline = time.monotonic() + 60
    while not temps and proc.poll() is None and time.monotonic() < deadline:
        temps = [n for n in os.listdir(outbox) if f".{HOST}-{proc.pid}-" in n] if outbox.exists() else []
    proc.kill()
    proc.wait()
    assert temps and (outbox / temps[0]).exists(), "submit placed its file before it could be killed: run again"
    os.utime(outbox / temps[0], (time.time() - 120,) * 2)  # unwritten for more than a minute
    again = run_cli("send", "--once", "--config", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [n for n in os.listdir(outbox) if n.endswith(".tmp")]


def test_a_folder_or_link_named_like_a_temp_is_left_and_the_run_goes_on(relay_dir: Path) -> None:
    """Review rev29: a user's own folder ``.mine.HOST-PID.tmp`` in the outbox (a dead pid) made every send --once
    fail at start, exit 4 'Is a directory'; only regular files are ever the relay's temps, the rest is kept."""
    config, spool = relay_dir / "config.toml", relay_dir / "spool"
    (spool / "outbox").mkdir(parents=True)
    (spool / "outbox" / fi_name(1)).write_bytes(b"<Dimona>1</Dimona>")
    folder = spool / "outbox" / f".mine.{HOST}-999999999.tmp"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    link = spool / "outbox" / f".link.{HOST}-999999998.tmp"
    link.symlink_to(folder / "notes.txt")
    result = run_cli("send", "--once", "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (folder / "notes.txt").read_text() == "mine" and link.is_symlink()
    assert (relay_dir / "remote" / "INTEST" / ("GO" + fi_name(1)[2:-2])).exists()


def test_a_temp_that_cannot_be_removed_is_kept_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's temp in a shared outbox (sticky folder: EPERM) is kept and said; the start goes on."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = tmp_path / f".FI.A.{HOST}-{int(gone.stdout)}.tmp"
    name.write_bytes(b"x")

    def refused(path: object) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "unlink", refused)
    assert remove_orphan_temps(tmp_path) == []
    assert name.exists()
