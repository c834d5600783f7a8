"""[hooks] on_result as a part of the daemon: started with the relay when set, told of each result written and
of sets newly overdue, changed or ended by a reload, stopped after the results' last write (hooks.py runs it)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from onss_relay.config import Config
from onss_relay.errors import JournalError
from onss_relay.hook_record import HookRecord
from onss_relay.hooks import ResultHook
from onss_relay.pipeline import Relay
from onss_relay.results import write_result

log = structlog.get_logger(__name__)


class HookPart:
    """Given the configuration in force (a function: SIGHUP may change it) and the relay, keep the on_result
    hook in step with [hooks]."""

    def __init__(self, cfg: Callable[[], Config], relay: Relay) -> None:
        self.cfg = cfg
        self.relay = relay
        self.hook: ResultHook | None = None

    def start(self) -> None:
        """Start the hook when [hooks] on_result is set, told of every result the relay writes."""
        if self.cfg().hooks.on_result:
            relay, poll = self.relay, self.cfg().poll
            self.hook = ResultHook(self.cfg().hooks, HookRecord(relay.spool.paths.root))
            try:  # the runs due when the relay stopped; a spool it cannot read now: they run at their next change
                self.hook.resume(relay.journal, poll, lambda row: write_result(relay.spool, relay.journal, row, poll))
            except (OSError, JournalError) as e:
                log.warning("hook_resume_failed", error=str(e))
            relay.results.on_write = self.hook.result_written

    def apply(self) -> None:
        """After a reload changed [hooks]: the running hook takes the new command and timeout for its next run,
        or starts when it was off, or is told no more when on_result is now empty. One hook (one thread, one
        queue) for the daemon's life: set back on, it is told again without queueing its due runs twice."""
        if self.hook is None:
            self.start()
        elif self.cfg().hooks.on_result:
            self.hook.apply(self.cfg().hooks)
            self.relay.results.on_write = self.hook.result_written
        else:
            self.relay.results.on_write = None  # the runs already queued still happen, with the command in force

    def stop(self) -> None:
        """End the hook's thread and the hook running now: what was due stays due for the next start."""
        if self.hook is not None:
            self.hook.stop()

    def tell_overdue(self) -> None:
        """Tell the hook of sets newly overdue (their results rewritten first, saying so); raise OSError or
        JournalError when the journal or results/ cannot be read or written."""
        relay, poll = self.relay, self.cfg().poll
        if self.hook is not None and self.cfg().hooks.on_result:
            self.hook.look_for_overdue(
                relay.journal, poll, lambda row: write_result(relay.spool, relay.journal, row, poll)
            )
