"""Logs that work with the habits of the field (issue 24 item 6): every line JSON when not on a terminal,
start-up errors included; a syslog priority prefix (`<4>`, sd-daemon(3)) when stderr is the journal
($JOURNAL_STREAM), read here as `journalctl -p warning -o cat` would; a retry storm said once when it starts,
once when it ends with a summary."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.fixtures.sshd import SshServer
from tests.helpers import state_of, wait_until

LINE = re.compile(r"<(\d)>(\{.*\})$")


def journal_env(log: Path) -> dict[str, str]:
    """Given the file standing for the journal's stream, return the environment systemd gives a service."""
    st = log.stat()
    return {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def journal_lines(log: Path) -> list[tuple[int, dict[str, Any]]]:
    """Given the stream's file, return (priority, record) per line; every line must be `<N>` + one JSON object."""
    lines = []
    for text in log.read_text().splitlines():
        m = LINE.match(text)
        assert m, f"not a prefixed JSON line: {text!r}"
        lines.append((int(m.group(1)), json.loads(m.group(2))))
    return lines


def test_a_start_up_error_is_a_json_line_with_an_error_priority(relay_dir: Path) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "journal.log"
    config.write_text(config.read_text() + "[metrics]\nlisten_on = 3\n")  # a key that does not exist
    log.touch()
    with log.open("a") as stream:
        code = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", "run", "--config", str(config)],
            stderr=stream,
            env=journal_env(log),
        ).returncode
    assert code == 2
    [(priority, record)] = journal_lines(log)
    assert priority == 3 and record["event"] == "command_failed" and "listen_on" in record["error"], record


@pytest.mark.parametrize(
    ("args", "code", "says", "command"),
    [  # the command is named when known (review 2: an unrecognized option reported "command": null)
        (["status", "--nope"], 2, "unrecognized arguments: --nope", "status"),  # argparse's own errors
        (["submit", "x.xml"], 2, "the following arguments are required: --app, --env", "submit"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'", None),
        (["status", "NOPE"], 1, "no set or ticket NOPE", "status"),  # a command's own "not found"
        (["status", "--limit", "0"], 2, "0 shows nothing", "status"),  # review of issue 29
    ],
)
def test_usage_errors_and_a_set_not_found_are_json_lines_with_an_error_priority(
    relay_dir: Path, args: list[str], code: int, says: str, command: str | None
) -> None:
    config, log = relay_dir / "config.toml", relay_dir / "journal.log"
    assert subprocess.run([sys.executable, "-m", "onss_relay.cli", "send", "--config", str(config)]).returncode == 0
    log.touch()
    with log.open("a") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", *args, "--config", str(config)],
            stderr=stream,
            stdout=subprocess.DEVNULL,
            env=journal_env(log),
        )
    assert done.returncode == code
    [(priority, record)] = journal_lines(log)  # one line, `<3>{...}`: no plain usage text
    assert priority == 3 and record["event"] == "command_failed" and says in record["error"], record
    assert record["command"] == command, record


@pytest.mark.slow
def test_a_retry_storm_is_one_warning_then_one_line_with_a_summary(sftp_dir: Path, sshd: SshServer) -> None:
    config, log = sftp_dir / "config.toml", sftp_dir / "journal.log"
    log.touch()
    sshd.stop()  # the transfer point is down from the start
    (sftp_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (sftp_dir / "spool" / "outbox" / fi_name(1)).write_bytes(b"<Dimona/>")
    with log.open("a") as stream:
        proc = subprocess.Popen(
            [sys.executable, "-m", "onss_relay.cli", "run", "--config", str(config), "--log-level", "debug"],
            stderr=stream,
            env=journal_env(log),
        )
    try:
        retries = lambda: [r for _, r in journal_lines(log) if r["event"] in ("upload_retry", "stage_retry")]  # noqa: E731
        assert wait_until(lambda: len(retries()) >= 4, 90), log.read_text()[-2000:]
        sshd.start()
        go = "GO" + fi_name(1)[2:-2]
        assert wait_until(lambda: state_of(config, go) == State.SENT, 90), log.read_text()[-2000:]
        assert wait_until(lambda: _every_storm_recovered(log), 30), log.read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    lines = journal_lines(log)
    storms: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for priority, r in lines:
        if r["event"] in ("upload_retry", "stage_retry"):
            storms.setdefault(r.get("stage", "upload"), []).append((priority, r))
    assert storms and all(len(attempts) >= 2 for attempts in storms.values()), storms
    for stage, attempts in storms.items():
        warned = [r for p, r in attempts if p <= 4]  # what journalctl -p warning shows
        assert len(warned) == 1 and attempts[0][1] is warned[0], attempts  # when it starts; the rest are debug
        assert all(p == 7 and r["level"] == "debug" for p, r in attempts[1:])
        [recovered] = [r for _, r in lines if r["event"] == "stage_recovered" and r["stage"] == stage]
        assert recovered["after_attempts"] >= 2 and recovered["last_error"], recovered  # the summary
    assert all(p == 6 for p, r in lines if r["level"] == "info")


def _every_storm_recovered(log: Path) -> bool:
    """Given the log, whether every stage that retried has said it recovered (the poll stage recovers at its next
    poll, after the upload stage: stopping at the first stage_recovered left the other one unsaid)."""
    lines = [r for _, r in journal_lines(log)]
    stages = {r.get("stage", "upload") for r in lines if r["event"] in ("upload_retry", "stage_retry")}
    recovered = {r.get("stage") for r in lines if r["event"] == "stage_recovered"}
    return bool(stages) and stages <= recovered


def test_checks_lines_into_the_journal_are_json_lines_with_their_priority(relay_dir: Path) -> None:
    """`check --local` as the unit's ExecStartPre: its ✓/✗ lines were plain text among the JSON lines."""
    config, log = relay_dir / "config.toml", relay_dir / "journal.log"
    (relay_dir / "keys" / "signer.pass").chmod(0o644)  # a password readable by others: a ✗ line
    log.touch()
    with log.open("a") as stream:
        code = subprocess.run(
            [sys.executable, "-m", "onss_relay.cli", "check", "--local", "--config", str(config)],
            stdout=stream,
            stderr=stream,
            env=journal_env(log),
        ).returncode
    assert code == 2
    lines = journal_lines(log)  # every line `<N>{...}`
    events = {record["event"] for _, record in lines}
    assert {"check_passed", "check_failed"} <= events, lines
    assert all(p == 3 for p, r in lines if r["event"] == "check_failed"), lines
    assert any("signer.pass" in r["error"] for p, r in lines if r["event"] == "check_failed"), lines  # jq's .error
    warned = [(p, r) for p, r in lines if r["event"] == "check_warning"]
    assert warned and all(p == 4 and r["error"] for p, r in warned), lines
    assert any(r["line"].startswith("remote: not checked") for _, r in lines if r["event"] == "check_note"), lines
    plain = subprocess.run(  # into a pipe (a script): the lines a person reads, as before
        [sys.executable, "-m", "onss_relay.cli", "check", "--local", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert plain.stdout.startswith("✓ configuration"), plain.stdout
