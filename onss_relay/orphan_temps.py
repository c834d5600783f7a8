"""Temp files of processes gone: a run killed while writing (SIGKILL, power cut) leaves its ``.NAME.HOST-PID.tmp``
(durable.temp_name) behind, and no later run writes under that name again. At start the relay removes those of
its own host whose process is gone; never another host's (a spool shared by two machines)."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import structlog

from onss_relay.durable import HOST

log = structlog.get_logger(__name__)

TEMP = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>[0-9]+)(?:-t[0-9a-f]+)?\.tmp$")  # durable.temp_name's
REUSED_AFTER = 60.0  # a temp is an orphan only when unwritten this long, and its pid gone or younger than it


def remove_orphan_temps(folder: Path, now: float | None = None) -> list[Path]:
    """Given a folder, remove the temp files this host's processes wrote there and left when they died: unwritten
    for a minute, and their pid not running or running a process started after the temp was last written (the pid
    was reused); return those removed."""
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            m = TEMP.match(entry.name)
            if not m or m["host"] != HOST or int(m["pid"]) == os.getpid():
                continue
            try:  # the relay's temps are regular files: a folder or link of that name is someone else's, kept
                if not entry.is_file(follow_symlinks=False):
                    continue
                written = entry.stat(follow_symlinks=False).st_mtime
                if _owner_gone(int(m["pid"]), written, now):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                continue
            except OSError as e:  # another user's file in a shared outbox: kept, said, the start goes on
                log.warning("orphan_temp_kept", file=entry.path, error=e.strerror or str(e))
    if removed:
        log.info("orphan_temps_removed", folder=str(folder), count=len(removed))
    return removed


def _owner_gone(pid: int, written: float, now: float) -> bool:
    """Given a temp file's pid and when it was last written, return whether the process that wrote it is gone."""
    if now - written <= REUSED_AFTER:
        return False  # written within the minute: perhaps by a live process this one cannot see (another pid
        # namespace: two containers sharing a host name and a spool), or by a pid reused meanwhile
    started = process_start(pid)
    return started is None or started > written


def process_start(pid: int) -> float | None:
    """Given a pid, return when its process started (seconds since the epoch), or None when no process has it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:  # no /proc here: whether it runs, not since when
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the command name (which may hold spaces)
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0
