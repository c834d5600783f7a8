"""Signals (SIGTERM, SIGINT, SIGHUP) acted on in a thread of their own, never in a Python signal handler: the
handler runs in the main thread between two of its bytecodes, perhaps inside ``stop.wait()`` or a log write, and
any lock it took there (an Event's, a stream's) may be one that thread already holds, not re-entrant: a deadlock."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType

import structlog

log = structlog.get_logger(__name__)

Action = Callable[[signal.Signals], None]

_actions: dict[int, Action] = {}
_pipe: tuple[int, int] | None = None  # (read, write) ends; the write end is the wakeup fd


def act_on_signals(actions: Mapping[signal.Signals, Action]) -> None:
    """Given what to do on each signal, do it in the "signals" thread when that signal comes. Called from the
    main thread (Python's rule for signal handlers). The C-level handler writes the signal's number to a pipe
    (``signal.set_wakeup_fd``) the moment it lands, so the action runs then, even while the main thread is in a
    long call; the Python-level handler does nothing, it only keeps the default action (exit) away."""
    _actions.update({int(s): a for s, a in actions.items()})
    if _pipe is None:
        _listen()
    for s in actions:
        signal.signal(s, _nothing)


def _listen() -> None:
    """Open the pipe the signals' numbers are written to, and start the "signals" thread reading it."""
    global _pipe
    readable, writable = os.pipe()
    os.set_blocking(writable, False)  # a signal handler never waits on a full pipe
    signal.set_wakeup_fd(writable)
    _pipe = (readable, writable)
    threading.Thread(target=_dispatch, args=(readable,), name="signals", daemon=True).start()


def _listen_again_in_child() -> None:
    """In a forked child (send --once's claim child), listen on a pipe of its own: fork() copies no thread, and the
    inherited wakeup fd is the parent's pipe (the child's SIGTERM would stop the parent, the child going on)."""
    if _pipe is None:
        return
    inherited = _pipe
    _listen()
    for fd in inherited:
        os.close(fd)


os.register_at_fork(after_in_child=_listen_again_in_child)


def _nothing(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: the signal's action runs in the "signals" thread (see act_on_signals)."""


def _dispatch(readable: int) -> None:
    """Given the pipe the signals' numbers are written to, run each signal's action, one after another."""
    while True:
        for number in os.read(readable, 64):
            action = _actions.get(number)
            if action is None:
                continue
            try:
                action(signal.Signals(number))
            except Exception as e:  # a bug: said, and the next signal is still acted on
                log.exception("signal_action_failed", signal=signal.Signals(number).name, error=repr(e))
