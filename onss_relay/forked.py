"""Work done in a forked child process with its own journal connection.

A one-shot send claims and signs in a child while the parent uploads: each gets a core, instead of both
competing for one interpreter. The child is forked, so it must be started before the parent starts any
thread (a fork copies locks other threads may hold); the one exception, the "signals" thread (signals.py), holds
no lock while it waits for a signal, and the child listens with a thread of its own.

The child dies with its parent (Linux's parent-death signal): a `send --once` ended by SIGTERM or SIGKILL (a cron
job's `timeout`, the OOM killer) took its claim-and-sign child with it, which went on alone holding the spool's
relay lock (every other command refused, "a relay is running") until its whole outbox scan was done. What the child
did not commit is done again next time, as after any crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Generic, TypeVar, cast

from onss_relay.errors import LocalError
from onss_relay.journal import Journal

T = TypeVar("T")


class Forked(Generic[T]):
    """Given work taking a journal and a way to open one, run the work in a forked child with a journal of its
    own (a connection is never shared across fork()); ``result()`` returns its value or raises its error."""

    def __init__(self, work: Callable[[Journal], T], open_journal: Callable[[], Journal], name: str) -> None:
        ctx = multiprocessing.get_context("fork")
        self._results, sender = ctx.Pipe(duplex=False)
        sys.stdout.flush()
        sys.stderr.flush()
        args = (work, open_journal, sender, os.getpid())
        self._process = ctx.Process(target=_run, args=args, name=name, daemon=True)
        self._process.start()
        sender.close()
        self._outcome: tuple[str, object] | None = None
        self._reading = threading.Lock()  # uploader threads ask at once: only one may read the pipe

    def done(self) -> bool:
        """Whether the work is over: its result (or error) has arrived, or the child is gone.

        The result is read as soon as it is there: a child blocked writing a large one into the pipe
        would otherwise never exit. Safe to call from several threads: one reads, the others see its outcome
        (two readers once split one message, one got the result and the other an end of file).
        """
        with self._reading:
            self._look()
        return self._outcome is not None

    def _look(self) -> None:
        """Read the child's outcome if it has arrived, or note that the child is gone without one."""
        if self._outcome is None:
            alive = self._process.is_alive()  # looked at first: a child that exited has written everything
            if self._results.poll():
                try:
                    self._outcome = self._results.recv()
                except EOFError:
                    self._outcome = ("error", None)
            elif not alive:
                self._outcome = ("error", None)

    def stop(self) -> None:
        """End the child now; what it did not commit is done again next time."""
        self._process.terminate()
        self._process.join()
        self._results.close()

    def result(self) -> T:
        """Wait for the child; return its work's value, or raise what stopped it."""
        while not self.done():
            with self._reading:
                self._results.poll(0.1)
        self._process.join()
        self._results.close()
        assert self._outcome is not None
        outcome, value = self._outcome
        if outcome == "ok":
            return cast(T, value)  # what work() returned, through the pipe
        if isinstance(value, BaseException):
            raise value
        code = self._process.exitcode
        if code is not None and code < 0:  # killed from outside: the OOM killer, a person
            raise LocalError(
                f"{self._process.name} was killed by {signal.Signals(-code).name} before it finished (out of memory?"
                " the kernel's log says); what it did not commit is done again at the next run"
            )
        raise RuntimeError(
            f"{self._process.name} ended with exit code {self._process.exitcode} ({value or 'no reason given'})"
        )


@contextlib.contextmanager
def heap_frozen() -> Iterator[None]:
    """While the block runs, leave the objects that exist now out of the garbage collector's passes (gc.freeze):
    a child forked in the block collects without touching, and so copying, the pages it shares with its parent,
    and the parent's full collections scan only what was made since. Each full pass of a `send --once` scanned
    the whole heap (imports, caches): ~55 ms in the parent and again in the child, per 1,000 sets. The objects are
    given back to the collector when the block ends (a long-lived process calling this keeps no garbage)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def travels(e: BaseException) -> bool:
    """Given an exception, return whether it crosses a pipe to another process whole: it pickles, and its bytes
    read back. One that pickles but does not unpickle (cryptography's InternalError: two arguments) raised
    TypeError in the receiver's recv(), its words lost (review rev12)."""
    try:
        pickle.loads(pickle.dumps(e))  # noqa: S301 - its own bytes
    except Exception:  # noqa: BLE001 - whatever pickle raises for it
        return False
    return True


def words_of(e: BaseException) -> str:
    """Given an exception that does not travel, what is sent instead: its type and words."""
    return f"{type(e).__name__}: {e}"


def die_with_parent(parent: int) -> None:
    """Given the pid of the process that forked this one, ask Linux to SIGKILL this process when its parent dies;
    exit at once when it is already gone (it died before the request was made)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the child ends with its work
        return
    if os.getppid() != parent:
        os._exit(1)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _run(
    work: Callable[[Journal], object], open_journal: Callable[[], Journal], results: Connection, parent: int
) -> None:
    die_with_parent(parent)
    journal: Journal | None = None
    try:
        journal = open_journal()  # its error too goes to the parent, with its own sentence and exit code
        results.send(("ok", work(journal)))
    except BaseException as e:
        results.send(("error", e if travels(e) else words_of(e)))
    finally:
        if journal is not None:
            journal.close()
        results.close()
