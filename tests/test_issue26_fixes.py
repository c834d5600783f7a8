"""What a second hostile review of issue 26 reproduced (hooks, one outcome, reload, overdue wording, names):
each test fails on the code before its fix."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from onss_relay.journal import State
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.helpers import Daemon, run_cli, state_of, wait_log, wait_until


def go_of(fi: str) -> str:
    return "GO" + fi[2:-2]


def counting_hook(relay_dir: Path, calls: Path, extra: str = "") -> Path:
    """Given the relay folder, write a hook appending "<set> <event> <outcome> start|end" to ``calls``."""
    hook = relay_dir / "tell-hr.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$ONSS_RELAY_SET $ONSS_RELAY_EVENT $ONSS_RELAY_OUTCOME start" >> {calls}\n'
        f"{extra}"
        f'echo "$ONSS_RELAY_SET $ONSS_RELAY_EVENT $ONSS_RELAY_OUTCOME end" >> {calls}\n'
    )
    hook.chmod(0o755)
    return hook


def lines(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.slow
def test_a_set_notified_by_a_one_shot_poll_is_told_by_the_next_daemon(relay_dir: Path) -> None:
    """With [hooks] on_result set and the daemon stopped, `send --once`, the transfer point's answer and
    `poll --once` notify two sets: the next `run` runs the hook for each (hook/due kept them), once; the one
    its notification refused (a blocking anomaly) says so in ONSS_RELAY_OUTCOME, not only "notified"."""
    config, log, calls = relay_dir / "config.toml", relay_dir / "daemon.log", relay_dir / "calls.txt"
    hook = counting_hook(relay_dir, calls)
    config.write_text(config.read_text() + f'[hooks]\non_result = "{hook}"\n')
    fi, refused = fi_name(61), fi_name(62)
    (relay_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (relay_dir / "spool" / "outbox" / fi).write_bytes(b"<Dimona><INSS>85073003328</INSS></Dimona>\r\n")
    (relay_dir / "spool" / "outbox" / refused).write_bytes(
        b"<Dimona><INSS>86010100123</INSS>\r\n<!-- SIMULATE-ANOMALY:90373-333:B -->\r\n</Dimona>\r\n"
    )
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()
    done = run_cli("poll", "--once", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert state_of(config, go_of(fi)) == state_of(config, go_of(refused)) == State.NOTIFIED
    assert lines(calls) == []  # a one-shot command runs no hook
    daemon = Daemon(config, log)
    daemon.start()
    try:
        assert wait_until(lambda: len(lines(calls)) == 4, 30, 0.2), (lines(calls), log.read_text()[-3000:])
    finally:
        assert daemon.stop() == 0
    assert sorted(lines(calls)) == [
        f"{go_of(fi)} notified accepted end",
        f"{go_of(fi)} notified accepted start",
        f"{go_of(refused)} notified refused end",
        f"{go_of(refused)} notified refused start",
    ]
    assert not list((relay_dir / "spool" / "hook" / "due").iterdir())
