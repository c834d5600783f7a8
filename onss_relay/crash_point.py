"""A test hook: ONSS_RELAY_CRASH_AT_COMMIT=N makes the process SIGKILL itself right after its Nth journal commit.

Read once, when this module is imported; unset (the only setting in production) it costs one integer compare
per commit. The fault suite (tests/faults/test_commit_crashes.py) runs a scenario for every N to put a power
cut at every commit boundary. Commits are counted per process (a forked child counts its own from 1), and
``ONSS_RELAY_CRASH_AT_COMMIT_AFTER=rename`` (or ``rename:K``) moves the kill to the first (Kth) durable
rename after that commit: between a commit and the file-system effects that follow it.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "ONSS_RELAY_CRASH_AT_COMMIT"
AFTER_ENV = "ONSS_RELAY_CRASH_AT_COMMIT_AFTER"


def _target() -> int:
    try:
        return int(os.environ.get(ENV, "0"))
    except ValueError:
        return 0


_TARGET = _target()


def _renames() -> int:
    after = os.environ.get(AFTER_ENV, "")
    if not after.startswith("rename"):
        return 0
    try:
        return int(after.partition(":")[2] or 1)
    except ValueError:
        return 1


_AT_RENAME = _renames()  # 0: kill at the commit itself; K: at the Kth rename after it
_lock = threading.Lock()
_count = {"pid": os.getpid(), "commits": 0, "armed": 0}


def committed() -> None:
    """Count one journal commit of this process; at the Nth, SIGKILL the process (or arm the rename kill)."""
    if not _TARGET:
        return
    with _lock:
        if _count["pid"] != os.getpid():  # a forked child: its own count
            _count.update(pid=os.getpid(), commits=0, armed=0)
        _count["commits"] += 1
        if _count["commits"] != _TARGET:
            return
        if _AT_RENAME:
            _count["armed"] = _AT_RENAME
            return
    os.kill(os.getpid(), signal.SIGKILL)


def renamed() -> None:
    """Given that a durable rename just happened, SIGKILL the process if a commit armed it (see AFTER_ENV)."""
    if not (_TARGET and _AT_RENAME and _count["armed"] and _count["pid"] == os.getpid()):
        return
    with _lock:
        _count["armed"] -= 1
        if _count["armed"]:
            return
    os.kill(os.getpid(), signal.SIGKILL)
