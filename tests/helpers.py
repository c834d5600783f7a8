"""Helpers shared by the tests: run the real CLI, start the real daemon, wait, read logs and the journal."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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


# run as root but without the capabilities that let root read and write any file: what an unprivileged
# user meets (permission denied), while the interpreter under /root stays reachable
WITHOUT_ROOT_FILE_ACCESS = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"]


# for a CLI run under `faketime` with DONT_FAKE_MONOTONIC=1: time.sleep made to work (fixtures/faketime_sleep)
FAKETIME_SLEEP = {
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).parent / "fixtures" / "faketime_sleep"), os.environ.get("PYTHONPATH")])
    )
}


def run_cli(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    wrapper: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Given arguments, run `onss-relay ARGS` as a separate process and return what it did (its stderr is
    kept for the end-of-run traceback check)."""
    r = subprocess.run(
        [*(wrapper or []), sys.executable, "-m", "onss_relay.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})} if env else None,
    )
    kept = os.environ.get("ONSS_RELAY_TEST_STDERR_LOG")
    if kept and r.stderr:
        with open(kept, "a") as f:
            f.write(f"$ onss-relay {' '.join(args)}\n{r.stderr}\n")
    return r


def start_daemon(
    config: Path, log: Path, env: dict[str, str] | None = None, debug: bool = True
) -> subprocess.Popen[bytes]:
    """Given a config and a log file, start `onss-relay run` as a real process logging into that file."""
    return Daemon(config, log, env, debug).spawn()


class Daemon:
    """The real daemon as a process logging into a file, for the SIGKILL tests: start it and wait until it
    works, kill it, start it again, stop it cleanly."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        debug: bool = False,
        wrapper: list[str] | None = None,
    ) -> None:
        self.config = config
        self.log = log
        self.env = env
        self.debug = debug
        self.wrapper = wrapper or []
        self.proc: subprocess.Popen[bytes] | None = None

    def starts(self, event: str = "relay_started") -> int:
        return self.log.read_text().count(event) if self.log.exists() else 0

    def start(self, timeout: float = 30, until: str = "relay_started") -> subprocess.Popen[bytes]:
        """Start it and return once it logs ``until`` (it works, not while Python is still importing), or
        once it exited."""
        before = self.starts(until)
        proc = self.spawn()
        wait_until(lambda: self.starts(until) > before or proc.poll() is not None, timeout, 0.01)
        return proc

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start `onss-relay run`, logging into the log file, and return at once."""
        args = [*self.wrapper, sys.executable, "-m", "onss_relay.cli", "run", "--config", str(self.config)]
        if self.debug:
            args += ["--log-level", "debug"]
        with self.log.open("ab") as f:
            env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(self.env or {})}  # stacks on SIGABRT (see stop)
            self.proc = subprocess.Popen(args, stdout=f, stderr=f, env=env)
        return self.proc

    def kill(self) -> None:
        """SIGKILL it: no cleanup, no journal close, as a power cut would leave the spool."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill_at_random(self, rng: random.Random, kills: int, max_delay: float) -> None:
        """Start and SIGKILL it ``kills`` times, each after a random delay up to ``max_delay`` seconds of work."""
        for _ in range(kills):
            self.start()
            time.sleep(rng.uniform(0, max_delay))
            self.kill()

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM it and return its exit status (it must exit within ``timeout`` seconds). One that does not is
        sent SIGABRT: faulthandler writes every thread's stack into its log, and it does not run on after the
        test (a stop that hung once in a full-suite run left only its log, the daemon polling on)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            raise


def seeded_rng(variable: str) -> random.Random:
    """A random generator seeded from $variable when set (to replay a failure), else at random; prints the seed."""
    seed = int(os.environ.get(variable, random.randrange(1 << 30)))
    print(f"seed {seed} (rerun with {variable}={seed})")
    return random.Random(seed)


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


def outbox_of_dimonas(relay_dir: Path, n: int) -> Path:
    """Given a relay folder and a count, fill a new outbox with that many 2 KB Dimona declarations; return it."""
    from tests.conftest import fi_name  # conftest is pytest's: imported when used

    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True)
    for i in range(1, n + 1):
        (outbox / fi_name(i)).write_bytes(b"<Dimona>" + b"x" * 2000 + b"</Dimona>")
    return outbox


def cut_into_parts(folder: Path, content: bytes, cuts: list[int]) -> list[Path]:
    """Given a folder, a declaration's bytes and where to cut them, write its parts (FI names of one set, in
    part order) and return their paths."""
    from tests.conftest import fi_name

    ends = sorted(cuts)
    pieces = [content[a:b] for a, b in zip([0, *ends], [*ends, len(content)], strict=True)]
    parts = []
    for i, piece in enumerate(pieces, 1):
        parts.append(folder / fi_name(1, total=len(pieces), part=i))
        parts[-1].write_bytes(piece)
    return parts


def forked_exit_code(work: Callable[[], bool], stuck: str, timeout: float = 20) -> int:
    """Given work returning True when it went right, run it in a forked child and return the child's exit code (0:
    right, 1: wrong, 2: raised); fail the test with ``stuck`` when the child has not ended within ``timeout`` s
    (a child waiting on threads or locks that exist only in its parent never ends)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if work() else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail(stuck)
