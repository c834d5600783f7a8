"""The on_result hook ([hooks] on_result): the HR side's own command, run with the path of results/<GO>.json
when the ONSS's final answer to a set is in (outcome.final_answer: refused by a final ACRF, notified with an
outcome that is not pending, a circuit test its ACRF accepted) or the set becomes overdue. It runs in a thread of its own, one at a time, with a
timeout and a bare environment (no secret of the relay's); a failure is logged, never retried, never blocking.
What it ran for is recorded durably (hook_record.py): at least once per final state of a set, never twice; a
stop of the relay ends the hook running (it stays due, told again at the next start). DueOnly records runs as due
for the one-shot commands, which run no hook.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import structlog

from onss_relay.config import HooksConfig, PollConfig
from onss_relay.config_rules import HOOK_PATH
from onss_relay.hook_record import HookRecord, Told
from onss_relay.journal import Journal, SetRow, State
from onss_relay.outcome import final_answer, outcome_of
from onss_relay.waiting import overdue, overdue_sets

log = structlog.get_logger(__name__)

OVERDUE_EVERY = 5.0  # seconds between two looks for sets newly overdue (an indexed query of the late ones)
OVERDUE_LOOKED = 1000  # overdue sets looked at each time, from where the last look stopped
BARE_PATH = HOOK_PATH
STOP_GRACE = 3.0  # seconds a hook has to end after SIGTERM when the relay stops (systemd's stop timeout is 20 s)


def told_key(row: SetRow, late: str | None) -> Told:
    """Given a set and why it is late (or None), return the state of it the hook tells: its state, how many
    notifications it has, overdue or not."""
    return str(row.state), len(row.data.notifications), late is not None


def hook_environment(result: Path, row: SetRow, why: str) -> dict[str, str]:
    """Given a result file, its set and why the hook runs, return the hook's whole environment: a plain PATH
    and what it is about, nothing inherited (the relay's may hold overrides and paths to secrets)."""
    return {
        "PATH": BARE_PATH,
        "LANG": "C.UTF-8",
        "ONSS_RELAY_RESULT": str(result),
        "ONSS_RELAY_SET": row.go_name,
        "ONSS_RELAY_STATE": str(row.state),
        "ONSS_RELAY_EVENT": why,  # refused, notified, acknowledged (a circuit test) or overdue
        # what the ONSS decided (a notification refusing every worker: event notified, outcome refused)
        "ONSS_RELAY_OUTCOME": outcome_of(row.go_name, row.state, row.data),
    }


def told_before(record: HookRecord, row: SetRow) -> Told | None:
    """Given the hook's durable record and a set, return the state of it the hook was told (or is about to be)
    before this process: its told record, or, for a final set whose record retention pruned and that has not
    changed since, its state now; None when it was never told."""
    if known := record.told(row.go_name):
        return known
    if final_answer(row) and record.pruned(row.go_name, row.change, row.updated_at):
        return told_key(row, None)
    return None


class DueOnly:
    """Given the hook record, record as due (hook/due) each result the hook must be told of, without running
    it: a one-shot `send` or `poll` runs no hook, the daemon runs these at its next start (at least once)."""

    def __init__(self, record: HookRecord) -> None:
        self.record = record

    def result_written(self, row: SetRow, path: Path, late: str | None = None) -> None:
        """Given a set whose result file was just written, record its run as due when its final answer is in
        and the hook was not told of it yet."""
        key = told_key(row, late)
        if final_answer(row) and told_before(self.record, row) != key:
            self.record.due(row.go_name, key)


class ResultHook:
    """Given [hooks] and the results folder, run on_result for each set whose final answer comes (refused,
    notified: again for each further notification; outcome.final_answer) or that becomes overdue, once per such
    change while running."""

    def __init__(self, hooks: HooksConfig, record: HookRecord | None = None) -> None:
        self.command = (shlex.split(hooks.on_result), float(hooks.timeout))  # replaced whole by a reload
        self.record = record  # what it ran for, across restarts (None: this process only)
        self._told: dict[str, Told] = {}  # set → (state, notifications, overdue) last told (or queued)
        self._queue: queue.Queue[tuple[Path, dict[str, str], Told] | None] = queue.Queue()
        self._next_overdue_look = 0.0
        # where the look for sets newly overdue stopped, per state ((updated_at, GO name) of the last one told),
        # and the poll limits it walked by: a set at or before it was looked at (a set changed since is past it)
        self._overdue_from: dict[str, tuple[float, str]] = {}
        self._overdue_limits = (0.0, 0.0)
        self._stopping = threading.Event()  # set at stop: nothing more runs, the running hook is ended
        self._running: subprocess.Popen[bytes] | None = None  # the hook process running now, if any
        self._lock = threading.Lock()  # between starting a hook process and stop() ending it
        self._thread = threading.Thread(target=self._run_all, name="hook", daemon=True)
        self._thread.start()

    def result_written(self, row: SetRow, path: Path, late: str | None = None) -> None:
        """Given a set whose result file was just written (and why it is late, if it is), queue the hook when
        the set reached something the HR side waits for that it was not told yet."""
        key = told_key(row, late)
        if self.told(row, key) or (not final_answer(row) and late is None):
            return
        self._told[row.go_name] = key
        if self.record is not None:
            self.record.due(row.go_name, key)  # durable before queued: a crash before the run runs it again
        why = "overdue" if late and not final_answer(row) else str(row.state)
        self._queue.put((path, hook_environment(path, row, why), key))

    def told(self, row: SetRow, key: Told) -> bool:
        """Given a set and a state of it, return True when the hook was told (or is about to be) of that state,
        in this process or, by its record, before a restart (a final set whose record retention pruned, not
        changed since: its state now)."""
        go_name = row.go_name
        if go_name not in self._told and self.record is not None and (known := told_before(self.record, row)):
            self._told[go_name] = known
        return self._told.get(go_name) == key

    def resume(self, journal: Journal, poll: PollConfig, write: Callable[[SetRow], Path]) -> None:
        """Given the journal, the poll settings and the function writing a set's result, queue again the runs
        that were due when the relay stopped (their results rewritten first); drop those whose set is gone or
        no longer calls for the hook."""
        if self.record is None:
            return
        for go_name in self.record.pending():
            row = journal.get_set(go_name)
            late = overdue(row, poll, time.time()) if row is not None else None
            if row is None or (not final_answer(row) and late is None):
                self.record.forget_due(go_name)
                continue
            self.result_written(row, write(row), late)

    def look_for_overdue(
        self, journal: Journal, poll: PollConfig, write: Callable[[SetRow], Path], now: float | None = None
    ) -> None:
        """Given the journal, the poll settings and the function writing a set's result, every OVERDUE_EVERY s
        rewrite the result of each set newly overdue (so that it says so) and queue the hook for it: the next
        OVERDUE_LOOKED overdue sets from where the last look stopped (every one is told, however many are late)."""
        now = time.time() if now is None else now
        if now < self._next_overdue_look:
            return
        self._next_overdue_look = now + OVERDUE_EVERY
        limits = (float(poll.acrf_overdue), float(poll.notification_overdue))
        if limits != self._overdue_limits:  # a reload changed them: sets already passed may be late now
            self._overdue_from, self._overdue_limits = {}, limits
        start = (-1.0, "")
        after = (self._overdue_from.get(State.SENT, start), self._overdue_from.get(State.ACKNOWLEDGED, start))
        for row, late in overdue_sets(journal, poll, now, OVERDUE_LOOKED, after):
            if not self.told(row, told_key(row, late)):
                self.result_written(row, write(row), late)
            self._overdue_from[row.state] = (row.updated_at, row.go_name)  # the next look goes on from there

    def apply(self, hooks: HooksConfig) -> None:
        """Given [hooks] as reloaded, run the new command with the new timeout from the next run on."""
        self.command = (shlex.split(hooks.on_result), float(hooks.timeout))

    def stop(self) -> None:
        """Run nothing more and end the hook running now (SIGTERM to its process group, SIGKILL after
        STOP_GRACE s), then end the thread: what was due stays due (hook/due), told again at the next start."""
        with self._lock:
            self._stopping.set()
            running = self._running
        self._queue.put(None)
        if running is not None:
            _signal_group(running, signal.SIGTERM)
            self._thread.join(STOP_GRACE)
            if self._thread.is_alive():
                _signal_group(running, signal.SIGKILL)
        self._thread.join(STOP_GRACE)

    def _run_all(self) -> None:
        while (item := self._queue.get()) is not None and not self._stopping.is_set():
            path, env, key = item
            try:
                ran = self._run(path, env)
                if ran and self.record is not None:  # after its end: a crash before this line runs it again
                    self.record.ran(env["ONSS_RELAY_SET"], key)
            except Exception as e:  # a hook's trouble is logged; the next set's hook still runs
                log.warning("hook_failed", set=env["ONSS_RELAY_SET"], error=f"{type(e).__name__}: {e}")

    def _start(self, argv: list[str], result: Path, env: dict[str, str], output: IO[bytes]) -> subprocess.Popen[bytes]:
        """Given the command, a result file, the environment and an output file, start the hook in a session of
        its own and return its process; raise InterruptedError when the relay is stopping."""
        with self._lock:
            if self._stopping.is_set():
                raise InterruptedError("the relay is stopping")
            self._running = subprocess.Popen(
                [*argv, str(result)],
                env=env,
                cwd=result.parent,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a timeout or a stop ends the hook and whatever it started
            )
            return self._running

    def _run(self, result: Path, env: dict[str, str]) -> bool:
        """Given a result file and the hook's environment, run on_result with the file's path and wait for that
        process to exit (not for what it left running in the background: its output goes to a file, not a pipe
        they would hold open); log its own exit code, or stop its process group at the timeout. Return False
        when the relay's stop ended it (still due), True otherwise (told, whatever it said)."""
        started, (argv, timeout) = time.monotonic(), self.command
        with tempfile.TemporaryFile() as output:
            try:
                proc = self._start(argv, result, env, output)
            except InterruptedError:
                return False
            except OSError as e:
                log.warning("hook_failed", set=env["ONSS_RELAY_SET"], command=argv[0], error=str(e))
                return True
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                log.warning("hook_timed_out", set=env["ONSS_RELAY_SET"], command=argv[0], timeout_s=timeout)
                return True
            finally:
                self._running = None
            said = _tail(output)
        if self._stopping.is_set():
            log.warning("hook_stopped", set=env["ONSS_RELAY_SET"], detail="still due: told again at the next start")
            return False
        ms = int((time.monotonic() - started) * 1000)
        if code != 0:
            log.warning("hook_failed", set=env["ONSS_RELAY_SET"], exit=code, output=said, duration_ms=ms)
        else:
            log.info("hook_ran", set=env["ONSS_RELAY_SET"], why=env["ONSS_RELAY_EVENT"], duration_ms=ms)
        return True


def _signal_group(proc: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Given a hook process (leader of its own session) and a signal, send it to the hook and what it started."""
    with contextlib.suppress(ProcessLookupError):  # it and all it started are gone already
        os.killpg(proc.pid, signum)


def _tail(output: IO[bytes]) -> str:
    """Given the file a hook wrote its output to, return its last 500 characters (what it said so far)."""
    output.seek(0, os.SEEK_END)
    output.seek(max(0, output.tell() - 2000))
    return output.read().decode(errors="replace").strip()[-500:]
