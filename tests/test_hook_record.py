"""The on_result hook remembers durably what it ran for (issue 26): a restart of the real daemon, after a
SIGKILL and with every result written again, never runs it twice for the same state of a set; a run cut short
by the crash runs again (at least once)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from onss_relay.journal import State
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.helpers import Daemon, state_of, wait_until

pytestmark = pytest.mark.slow


def go_of(fi: str) -> str:
    return "GO" + fi[2:-2]


def runs(calls: Path, go: str, event: str) -> int:
    """Given the hook's call log, return how many runs for a set and event started."""
    return calls.read_text().splitlines().count(f"{go} {event}") if calls.exists() else 0


def test_a_restart_never_runs_the_hook_twice_and_a_run_cut_short_runs_again(relay_dir: Path) -> None:
    config, log, calls = relay_dir / "config.toml", relay_dir / "daemon.log", relay_dir / "calls.txt"
    slow_pid, slow_once = relay_dir / "slow.pid", relay_dir / "slow.once"
    hook = relay_dir / "count-runs.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$ONSS_RELAY_SET $ONSS_RELAY_EVENT" >> {calls}\n'
        # the pid written whole before the test can see the file (a redirection creates it empty first)
        f'case "$ONSS_RELAY_SET" in *00052*) [ -e {slow_once} ] || {{ touch {slow_once}; echo $$ > {slow_pid}.tmp;'
        f" mv {slow_pid}.tmp {slow_pid}; sleep 120; }};; esac\n"
    )
    hook.chmod(0o755)
    text = config.read_text().replace('interval = "1s"', 'interval = "1s"\nacrf_overdue = "3s"')
    config.write_text(text + f'[hooks]\non_result = "{hook}"\ntimeout = "150s"\n')
    outbox, root = relay_dir / "spool" / "outbox", relay_dir / "spool"
    notified, slow, late, after = fi_name(51), fi_name(52), fi_name(53), fi_name(54)
    daemon = Daemon(config, log)
    daemon.start()
    try:
        (outbox / notified).write_bytes(b"<Dimona><INSS>85073003328</INSS></Dimona>\r\n")

        def answered(*fis: str) -> bool:
            Simulator(relay_dir / "remote", SENDER).process()
            return all(state_of(config, go_of(f)) == State.NOTIFIED for f in fis)

        assert wait_until(lambda: answered(notified), 60, 0.5), log.read_text()[-3000:]
        (outbox / late).write_bytes(
            b"<Dimona><INSS>92030300345</INSS></Dimona>\r\n"
        )  # answered late, when the simulator runs again
        assert wait_until(
            lambda: runs(calls, go_of(notified), "notified") and runs(calls, go_of(late), "overdue"), 90, 0.5
        ), (calls.read_text() if calls.exists() else "no call", log.read_text()[-3000:])
        (outbox / slow).write_bytes(b"<Dimona><INSS>86010100123</INSS></Dimona>\r\n")
        assert wait_until(lambda: answered(slow) and slow_pid.exists(), 60, 0.5), log.read_text()[-3000:]
        daemon.kill()  # the slow set's run is cut short: its hook is still running
        with contextlib.suppress(ProcessLookupError):  # its own session: the kill of the relay left it
            os.kill(int(slow_pid.read_text()), signal.SIGKILL)
        daemon.start()  # results.cursor is past the slow set: only its due record runs it again
        assert wait_until(lambda: runs(calls, go_of(slow), "notified") == 2, 30, 0.5), calls.read_text()
        # the run's start is in calls.txt before its end is recorded: a kill in between runs it a third time
        assert wait_until(lambda: not (root / "hook" / "due" / go_of(slow)).exists(), 30, 0.1)
        daemon.kill()
        (root / "results.cursor").unlink()  # every result written again at start, as after a restore
        daemon.start()
        (outbox / after).write_bytes(b"<Dimona><INSS>93040400456</INSS></Dimona>\r\n")
        assert wait_until(lambda: answered(after) and runs(calls, go_of(after), "notified"), 60, 0.5), log.read_text()[
            -3000:
        ]
        told = calls.read_text()
        assert runs(calls, go_of(notified), "notified") == 1, told  # told once, across the restarts
        assert runs(calls, go_of(late), "overdue") == 1 and runs(calls, go_of(slow), "notified") == 2, told
    finally:
        assert daemon.stop() == 0
