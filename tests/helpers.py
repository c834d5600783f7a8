"""Helpers shared by the tests: run the real CLI, start the real daemon, wait, read logs and the journal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Given a predicate, poll it until true or until timeout seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Given arguments, run `onss-relay ARGS` as a separate process and return what it did."""
    return subprocess.run([sys.executable, "-m", "onss_relay.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})} if env else None)


def start_daemon(config: Path, log: Path, env: dict[str, str] | None = None, debug: bool = True) -> subprocess.Popen[bytes]:
    """Given a config and a log file, start `onss-relay run` as a real process logging into that file."""
    args = [sys.executable, "-m", "onss_relay.cli", "run", "--config", str(config)]
    if debug:
        args += ["--log-level", "debug"]
    with log.open("ab") as f:
        return subprocess.Popen(args, stdout=f, stderr=f, env={**os.environ, **(env or {})})


def wait_log(log: Path, text: str, count: int = 1, timeout: float = 20) -> bool:
    """Given a log file, wait until ``text`` appears in it ``count`` times."""
    return wait_until(lambda: log.exists() and log.read_text().count(text) >= count, timeout)


def state_of(config: Path, go: str) -> State | None:
    """Given a config file and a GO name, return the set's state in that spool's journal."""
    j = open_journal_at(load_config(config, environ={}).paths.journal_path)
    try:
        row = j.get_set(go)
        return row.state if row else None
    finally:
        j.close()
