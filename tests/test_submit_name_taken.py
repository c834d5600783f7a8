"""`submit` never overwrites (review of issues 25/26/29): a file of the very name it places, dropped by hand
into the outbox while it copies, is left as it is; submit places none of that set, says so in one sentence and
exits 1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onss_relay.durable import HOST

BY_HAND = b"<DmfA>dropped by hand</DmfA>"


def drop_while_copying(proc: subprocess.Popen[str], outbox: Path, last_temp: str) -> Path:
    """Given a running submit, its outbox and the end of the name of its last temp file, stop it once that temp
    is there (its copy under way, nothing renamed yet), write a file of that part's final name by hand, let it
    go on; return that file."""
    temp: Path | None = None
    deadline = time.monotonic() + 60
    while temp is None and proc.poll() is None and time.monotonic() < deadline:
        temps = [n for n in os.listdir(outbox) if last_temp in n and n.endswith(".tmp")] if outbox.exists() else []
        temp = outbox / temps[0] if temps else None
    assert temp is not None, "submit placed no temp file"
    os.kill(proc.pid, signal.SIGSTOP)  # between its copy and its rename
    try:
        assert temp.exists(), "submit renamed its file before it could be stopped: run again"
        final = outbox / temp.name[1:].split(f".{HOST}-")[0]  # .NAME.HOST-PID.tmp
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # a person's file of that very name
        os.write(fd, BY_HAND)
        os.close(fd)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    return final


@pytest.mark.parametrize("parts", [1, 2])
def test_submit_never_overwrites_a_file_of_its_name_dropped_by_hand_meanwhile(relay_dir: Path, parts: int) -> None:
    config, outbox = relay_dir / "config.toml", relay_dir / "spool" / "outbox"
    contents = [relay_dir / f"declaration{i}.xml" for i in range(parts)]
    for content in contents:
        content.write_bytes(b"<DmfA>" + b"x" * (64 << 20) + b"</DmfA>")  # copied a while: the moment to drop ours
    proc = subprocess.Popen(
        [sys.executable, "-m", "onss_relay.cli", "submit", *map(str, contents), "--app", "DMFA", "--env", "T"]
        + ["--parts", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    final = drop_while_copying(proc, outbox, f".T.{parts}.{parts}.{HOST}-")  # the last part's name is taken
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert final.read_bytes() == BY_HAND  # left as it is
    said = [line for line in err.splitlines() if final.name in line]
    assert said and "already in the outbox" in said[0] and str(contents[-1]) in said[0], err
    assert sorted(os.listdir(outbox)) == [final.name]  # no temp left, no part of the set placed
