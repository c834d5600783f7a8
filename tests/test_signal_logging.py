"""A SIGTERM that lands while the main thread writes a log line: structlog's write lock per stream is not
re-entrant, so a signal handler that logged waited for ever on the lock the interrupted write held (`poll --once`
stopped during a burst of response_mirrored lines never ended: seen in CI). The handlers log from a thread.

Nor may a handler take any other lock the main thread may hold: `Event.set` takes the event's condition lock, which
the main thread holds inside its own `stop.wait()` between two waits (a daemon that never stopped after SIGTERM)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, signal, sys, threading, time
from structlog._output import _get_lock_for_file  # the lock a log write holds (structlog's own, private)
from onss_relay.log import setup_logging
{install}
stream = open(sys.argv[1], "w")
setup_logging("info", json_output=True, stream=stream)
stop = threading.Event()
install(stop)
with _get_lock_for_file(stream):  # as a log line being written by the main thread
    os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, in this thread, the lock held
    for _ in range(100):
        time.sleep(0.01)
    assert stop.is_set()
time.sleep(0.5)  # the handler's own line, written once the lock is free
"""

POLL = "from onss_relay.commands.poll import stop_on_signals as install"
DAEMON = """
from onss_relay.daemon import Daemon
def install(stop):
    d = Daemon.__new__(Daemon)
    from onss_relay.sd_notify import Notifier
    d.notifier, d.stopping, d.stop, d._reload = Notifier(), threading.Event(), stop, threading.Event()
    d.install_signal_handlers()
"""


@pytest.mark.parametrize("install", [POLL, DAEMON], ids=["poll --once", "run"])
def test_a_sigterm_during_a_log_write_stops_and_is_logged_without_a_deadlock(tmp_path: Path, install: str) -> None:
    log = tmp_path / "log.jsonl"
    script = SCRIPT.format(install=install)
    r = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"event": "stopping"' in log.read_text() and '"signal": "SIGTERM"' in log.read_text()


HOLDING = """
import os, signal, sys, threading, time
{install}
stop, reload = threading.Event(), threading.Event()
install(stop, reload)
event = {{"SIGTERM": stop, "SIGHUP": reload}}[sys.argv[1]]
with event._cond:  # as in the main thread's event.wait(): held between two waits (CPython's own, private)
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # its handler runs here, in this thread, the lock held
    for _ in range(10):
        time.sleep(0.01)
assert event.wait(10), "the signal was lost"
"""
DAEMON_HUP = """
from onss_relay.daemon import Daemon
def install(stop, reload):
    d = Daemon.__new__(Daemon)
    from onss_relay.sd_notify import Notifier
    d.notifier, d.stopping, d.stop, d._reload = Notifier(), threading.Event(), stop, reload
    d.install_signal_handlers()
"""
POLL_HUP = "from onss_relay.commands.poll import stop_on_signals\ndef install(stop, reload): stop_on_signals(stop)"


@pytest.mark.parametrize(
    ("install", "signal"),
    [(POLL_HUP, "SIGTERM"), (DAEMON_HUP, "SIGTERM"), (DAEMON_HUP, "SIGHUP")],
    ids=["poll --once", "run", "run SIGHUP"],
)
def test_a_signal_while_the_main_thread_holds_the_event_it_sets_is_not_a_deadlock(install: str, signal: str) -> None:
    """Issue: test_full_disk's daemon did not exit within 20 s after SIGTERM (its stages polled on, the stop event
    never set): the handler's `stop.set()` waited for ever on the lock its own thread held in `stop.wait()`."""
    script = HOLDING.format(install=install)
    try:
        r = subprocess.run([sys.executable, "-c", script, signal], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{signal} while the main thread held the event's lock: the handler waited for ever on it")
    assert r.returncode == 0, r.stderr[-2000:]


CHILD = """
import os, signal, sys, threading, time
from pathlib import Path
from onss_relay.commands.poll import stop_on_signals
from onss_relay.forked import Forked
from onss_relay.journal import open_journal_at
stop, working = threading.Event(), Path(sys.argv[1]) / "working"
stop_on_signals(stop)  # as send --once: the handlers first, then the claim child forked
def work(journal):
    working.touch()
    return stop.wait(20)
child = Forked(work, lambda: open_journal_at(Path(sys.argv[1]) / "journal.sqlite"), "test-child")
while not working.exists():  # a signal landing inside fork() itself is dropped by Python in the child
    time.sleep(0.01)
os.kill(child._process.pid, signal.SIGTERM)  # as Forked.stop() does, or a kill of the whole process group
assert child.result() is True, "the child never saw its SIGTERM: it went on with its work"
assert not stop.is_set(), "the child's SIGTERM stopped its parent"
"""


def test_send_onces_claim_child_acts_on_its_own_sigterm(tmp_path: Path) -> None:
    """The child forked by `send --once` (claim and sign) ends at a safe point on SIGTERM, as before the signals
    thread: the thread reading the signals' pipe is not copied by fork(), and the pipe the child inherits is its
    parent's (a SIGTERM to the child would stop the parent, and the child would go on)."""
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
