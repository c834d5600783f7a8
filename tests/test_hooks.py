"""The on_result hook with the real daemon (issue 26): run with the path of results/<GO>.json when a set is
notified, refused or becomes overdue; a bare environment (no secret of the relay's); a hook that hangs is
stopped at its timeout and logged, and the relay goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onss_relay.journal import State
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.helpers import Daemon, state_of, wait_log, wait_until

pytestmark = pytest.mark.slow
SECRET = "hook-must-not-see-this-0xC0FFEE"


def go_of(fi: str) -> str:
    return "GO" + fi[2:-2]


def test_the_hook_runs_for_final_and_overdue_sets_without_secrets_and_within_its_timeout(relay_dir: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "daemon.log"
    calls, envs = relay_dir / "calls.txt", relay_dir / "envs"
    envs.mkdir()
    hook = relay_dir / "tell-hr.sh"
    hook.write_text(
        "#!/bin/sh\n"
        f'echo "$1 $ONSS_RELAY_EVENT" >> {calls}\n'
        f'env > "{envs}/$ONSS_RELAY_SET"\n'
        'case "$ONSS_RELAY_SET" in *00033*) sleep 60;; esac\n'
    )
    hook.chmod(0o755)
    text = config.read_text().replace('interval = "1s"', 'interval = "1s"\nacrf_overdue = "3s"')
    config.write_text(text + f'[hooks]\non_result = "{hook}"\ntimeout = "2s"\n')
    daemon = Daemon(config, log, env={"ONSS_RELAY_HOOK_TEST_SECRET": SECRET})
    daemon.start()
    outbox = relay_dir / "spool" / "outbox"
    notified, refused, hangs, late = fi_name(31), fi_name(32), fi_name(33), fi_name(34)
    try:
        (outbox / notified).write_bytes(b"<Dimona><INSS>85073003328</INSS></Dimona>\r\n")
        (outbox / refused).write_bytes(b"<Dimona>\r\n<!-- SIMULATE-ACRF:REFUSE-FINAL -->\r\n</Dimona>\r\n")
        (outbox / hangs).write_bytes(b"<Dimona><INSS>86010100123</INSS></Dimona>\r\n")
        answered = [go_of(f) for f in (notified, refused, hangs)]

        def all_answered() -> bool:
            Simulator(relay_dir / "remote", SENDER).process()
            return all(state_of(config, go) in (State.NOTIFIED, State.REFUSED) for go in answered)

        assert wait_until(all_answered, 60, 0.5), log.read_text()[-3000:]
        (outbox / late).write_bytes(b"<Dimona><INSS>92030300345</INSS></Dimona>\r\n")  # never answered
        results = relay_dir / "spool" / "results"
        expected = {
            f"{results / go_of(notified)}.json notified",
            f"{results / go_of(refused)}.json refused",
            f"{results / go_of(hangs)}.json notified",
            f"{results / go_of(late)}.json overdue",
        }
        assert wait_until(lambda: calls.exists() and expected <= set(calls.read_text().splitlines()), 90, 0.5), (
            calls.read_text() if calls.exists() else "no call",
            log.read_text()[-3000:],
        )
        assert wait_log(log, "hook_timed_out")
        assert json.loads((results / f"{go_of(late)}.json").read_text())["overdue"]  # the file says why
        for env in envs.iterdir():
            seen = env.read_text()
            assert SECRET not in seen and "ONSS_RELAY__" not in seen, env.name
            assert f"ONSS_RELAY_SET={env.name}" in seen
        assert calls.read_text().count(f"{go_of(notified)}.json") == 1  # told once, not at each rewrite
    finally:
        assert daemon.stop() == 0
