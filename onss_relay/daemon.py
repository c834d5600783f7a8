"""`onss-relay run`: watcher, signer, uploader and poller as threads sharing one journal, until SIGTERM.

One active relay per spool (the relay lock: a flock, or a lease in the PostgreSQL journal; others wait as
standbys, standby.py); a relay that loses its lease stops every stage at once and waits as a standby again. sd_notify READY/WATCHDOG/STOPPING,
a health file for `status --health`, and optional Prometheus /metrics and /healthz.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
import time
from typing import TYPE_CHECKING

import structlog

from onss_relay.config import Config
from onss_relay.disk import DiskWatch
from onss_relay.errors import (
    JournalBusy,
    JournalError,
    JournalFull,
    describe_os_error,
)
from onss_relay.health import Health, HealthSnapshot, relay_health, snapshot_of, write_report
from onss_relay.hook_part import HookPart
from onss_relay.leadership import TermStop, relay_lock_for
from onss_relay.log import log_thread_death
from onss_relay.pipeline import Relay
from onss_relay.reload import reloaded
from onss_relay.results import IN_FLIGHT_QUIET
from onss_relay.retention import Pruner
from onss_relay.sd_notify import Notifier
from onss_relay.services import Running, Service
from onss_relay.signals import act_on_signals
from onss_relay.spool_identity import check_spool_identity
from onss_relay.stage_set import relay_stages
from onss_relay.stage_thread import Stage
from onss_relay.stages.uncertain import uncertain_wait
from onss_relay.stages.watch import Watcher
from onss_relay.standby import report_waiting, wait_before_recovery, wait_for_leadership

if TYPE_CHECKING:  # the listener (prometheus_client, jinja2) is imported only when metrics.listen is set
    from onss_relay.web import WebServer

log = structlog.get_logger(__name__)

STOP_GRACE = 9.0
START_RETRY = 5.0  # seconds between attempts to open the spool when the disk is full


class Daemon:
    """Given the configuration, run every stage until SIGTERM/SIGINT; SIGHUP reloads what can be reloaded."""

    def __init__(self, cfg: Config, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.lock = relay_lock_for(cfg)
        self.stop = TermStop(self.lock)  # this term's: it ends when stopped or the moment the leadership is lost
        self.stopping = threading.Event()  # the process's: SIGTERM/SIGINT
        self.lost: str | None = None  # why the last term lost the leadership
        self.notifier = notifier or Notifier()
        self.relay: Relay | None = None
        self.stages: list[Stage] = []
        self.watcher: Watcher | None = None
        self.pruner: Pruner | None = None
        self.started = time.time()
        self._reloaded_at = 0.0  # the poll health window counts from a reload too (a shorter interval)
        self._reload = threading.Event()
        self._said: set[str] = set()
        self.web: WebServer | None = None  # the listener on [metrics] listen, when set
        self.hook: HookPart | None = None  # [hooks] on_result
        self._status = ""  # the last systemd STATUS sent while running  # per-second warnings said once, until they end

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads: acted on in the "signals" thread (signals.py), never in a handler
        that could wait on a lock the main thread holds in its own ``stop.wait()``."""

        def on_stop(signum: signal.Signals) -> None:
            self.stopping.set()
            self.stop.set()
            self.notifier.send("STOPPING=1")
            log.info("stopping", signal=signum.name)

        def on_hup(signum: signal.Signals) -> None:
            self._reload.set()

        act_on_signals({signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_hup})

    def wait_for_lock(self) -> bool:
        """Take the relay lock, waiting as a standby while another relay holds it; False if stopped first."""
        return wait_for_leadership(self.lock, self.stop, self.notifier, self._standby_tick, self.cfg.metrics)

    def _standby_tick(self) -> None:
        """Every second of a standby's wait: ping the watchdog, and say in health.json that the relays wait for
        the journal's database while it cannot be reached."""
        self._ping_watchdog()
        report_waiting(self.cfg.paths.root, self.lock)

    def run(self) -> int:
        """Run terms of leadership until stopped: wait for the lock, run the stages, and after a lost lease
        (PostgreSQL) stop them all and wait as a standby again."""
        threading.excepthook = log_thread_death
        while True:
            if not self.wait_for_lock():
                return 0
            try:
                code = self._run_locked()
            finally:
                self.lost = self.lost or self.lock.lost()  # a stage may have seen it first (TermStop)
                self.lock.release()
            if self.stopping.is_set() or self.lost is None:
                return code
            log.warning("standby_again", reason=self.lost)
            self.lost, self.stop = None, TermStop(self.lock)
            self.relay, self.stages, self.watcher, self.web, self.hook = None, [], None, None, None

    def _run_locked(self) -> int:
        relay = self.relay = self._open_relay()
        if relay is None:
            return 0  # stopped while waiting for room
        relay.uploader.before_put = self.lock.check  # a relay whose lease lapsed puts nothing, no GO
        relay.spool.fence = self.lock.check  # nor archives, holds or quarantines files of the shared spool
        relay.results.in_flight_quiet = IN_FLIGHT_QUIET  # a set in flight: its result once it stays in a state
        try:
            check_spool_identity(self.cfg.paths.root, relay.journal)  # a share not mounted here: refused, exit 2
        except BaseException:
            relay.close()
            raise
        if not wait_before_recovery(self.lock, relay.journal, self.cfg.journal.lease, self.stop):
            self.lost = self.lock.lost()
            relay.close()
            return 0
        outbox_wake = threading.Event()
        self.stages, self.pruner = relay_stages(lambda: self.cfg, relay, self.stop, outbox_wake)
        watcher = self.watcher = Watcher(relay.claimer, self.cfg.watch.polling, outbox_wake)
        parts = Running(self._parts(relay, watcher))
        parts.start()
        log.info(
            "relay_started",
            outbox=str(relay.spool.outbox),
            transport=self.cfg.remote.transport,
            observer="polling" if watcher.polling else "inotify",
        )
        self.notifier.send("READY=1", f"STATUS=relaying {relay.spool.outbox}")
        try:
            self._supervise()
        finally:
            self._shut_down(relay, parts)
        log.info("relay_stopped")
        return 0

    def _parts(self, relay: Relay, watcher: Watcher) -> list[Service]:
        """Given the relay and the outbox watcher, return the daemon's parts: started in this order (each after
        what it requires), stopped in reverse: the stages first, the final results and the hook last."""
        hook = self.hook = HookPart(lambda: self.cfg, relay)
        return [
            Service("hook", hook.start, hook.stop),
            Service("results", lambda: None, self._write_results, requires=("hook",)),  # stop: the last changes
            Service("watcher", watcher.start, watcher.stop),
            Service("web", lambda: self._start_web(relay), self._stop_web),
            Service("stages", self._start_stages, self._stop_stages, requires=("watcher", "results")),
        ]

    def _stop_web(self) -> None:
        if self.web is not None:
            self.web.shutdown()
            self.web.server_close()  # its address is free for the standby's listener after a lost lease

    def _start_stages(self) -> None:
        for stage in self.stages:
            stage.start()

    def _stop_stages(self) -> None:
        """Wake every stage and give them STOP_GRACE seconds in all to finish the file in flight."""
        for stage in self.stages:
            stage.wake.set()
        deadline = time.monotonic() + STOP_GRACE
        for stage in self.stages:
            stage.join(max(0.0, deadline - time.monotonic()))

    def _open_relay(self) -> Relay | None:
        """Open the spool and the journal; a full disk at start is said and retried (the unit stays up and says
        why), not fatal. None when stopped meanwhile."""
        waiting_since: float | None = None
        while True:
            try:
                relay = Relay(self.cfg, stop=self.stop, max_attempts=None, epoch=self.lock.epoch)
                if waiting_since is not None:  # one line when the wait ends
                    log.info("relay_waited", waited_s=round(time.time() - waiting_since))
                return relay
            except (JournalFull, JournalBusy, OSError) as e:
                if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                why = describe_os_error(e) if isinstance(e, OSError) else str(e)
                if waiting_since is None:  # one warning when it starts, not one per attempt
                    waiting_since = time.time()
                    log.error("relay_waiting", error=why, retry_in_s=START_RETRY)
                self.notifier.send("READY=1", f"STATUS=waiting: {why}")
            if self.stop.wait(START_RETRY):
                return None
            self._ping_watchdog()

    def _supervise(self) -> None:
        """Until stopped: ping the watchdog, write the health file, apply SIGHUP reloads."""
        tick = 1.0 if self.notifier.watchdog_interval is None else min(1.0, self.notifier.watchdog_interval)
        disk = DiskWatch(self.cfg.paths.root)
        self._status = f"relaying {self.cfg.paths.outbox_dir}"
        while not self.stop.wait(tick):
            if self.lock.lost() is not None:  # the stages saw it too (TermStop): they stop at their next step
                break
            self._ping_watchdog()
            was_full = disk.since is not None
            if disk.check() is None and was_full:  # logged once when it fills and once when it ends
                for stage in self.stages:
                    stage.retry_now()  # room again: the stages backing off try now
            if self.watcher is not None:
                self.watcher.keep_alive()
            self._status_follows()
            self._write_health()
            self._write_results()
            self._overdue_to_hook()
            if self._reload.is_set():
                self._reload.clear()
                self._handle_reload()
        if (lost := self.lock.lost()) is not None:  # another relay may be active now: every stage stops at once
            log.error("stages_stopping", reason=lost)
            self.lost = lost
            self.stop.set()

    def _shut_down(self, relay: Relay, parts: Running) -> None:
        """Stop the parts (stages first), then close what they use: the journal only once no stage thread can
        touch it."""
        parts.stop()
        if (lost := self.lock.lost()) is not None and not self.stopping.is_set():
            self._write_health(instead=Health(False, f"standby again: {lost}"))  # it still runs, waiting
        else:
            self._write_health(stopped=True)
        busy = [stage.health.name for stage in self.stages if stage.is_alive()]
        if busy:  # closing the journal under them would turn their last commit into an error; exit closes it
            log.warning(
                "stopping_with_busy_stages",
                stages=busy,
                grace_s=STOP_GRACE,
                detail="the journal is left for the process exit to close; recovery resumes their sets",
            )
            return
        relay.close()

    def _ping_watchdog(self) -> None:
        if self.notifier.watchdog_interval is not None:
            self.notifier.send("WATCHDOG=1")

    def _handle_reload(self) -> None:
        """Re-read the configuration (reload.py): what tunes timing, retention and the hook applies now."""
        new = reloaded(self.cfg)
        if new is None:
            return
        hooks_changed, self.cfg = new.hooks != self.cfg.hooks, new
        self._reloaded_at = time.time()
        if self.relay is not None:
            self.relay.apply(self.cfg)
        if hooks_changed and self.hook is not None:
            self.hook.apply()
        if self.pruner is not None:
            self.pruner.cfg = self.cfg.retention  # its next run removes by the new days (interval: read each wait)
        for stage in self.stages:
            stage.wake.set()  # a new interval applies now, not after the current wait

    # -- health: decided in health.py ------------------------------------------------------------

    def health(self) -> Health:
        """Return the relay's health now (health.py decides)."""
        return relay_health(self.cfg, self.stages, self.started, self._reloaded_at, self.stop.is_set())

    def _write_results(self) -> None:
        """results/<GO name>.json follow the journal every second (a set's first state included); a relay that
        lost its lease writes none (the new leader does, on the same shared folder)."""
        if self.relay is None or self.lock.lost() is not None:
            return
        try:
            self.relay.results.catch_up(self.stop, 0.0 if self.stop.is_set() else None)  # all at a stop
        except (OSError, JournalError) as e:
            self._warn_once("results_unwritable", str(e))
        else:
            self._said.discard("results_unwritable")

    def _overdue_to_hook(self) -> None:
        """Tell the on_result hook of sets newly overdue (their results rewritten first, saying so)."""
        try:
            if self.hook is not None:
                self.hook.tell_overdue()
        except (OSError, JournalError) as e:
            self._warn_once("results_unwritable", str(e))

    def _write_health(self, stopped: bool = False, instead: Health | None = None) -> None:
        """Write health.json: this relay's health, ``instead`` when given, or that it stopped."""
        health = None if stopped else (instead or self.health())
        try:
            write_report(self.cfg.paths.root, health, self.stages, self.lock.describe())
        except OSError as e:
            self._warn_once("health_unwritable", str(e))
        else:
            self._said.discard("health_unwritable")

    def _status_follows(self) -> None:
        """Send systemd a new STATUS when the health says something else: why the relay waits, or relaying."""
        health = self.health()
        ok, reason = health.healthy, health.reason
        if ok and self.relay is not None:  # healthy, yet sets may wait out a quiet period (uncertain)
            with contextlib.suppress(JournalError):
                reason = uncertain_wait(self.relay.journal, float(self.cfg.remote.quiet_period)) or reason
        status = f"waiting: {reason}" if not ok or reason != "ok" else f"relaying {self.cfg.paths.outbox_dir}"
        if status != self._status:
            self._status = status
            self.notifier.send(f"STATUS={status}")

    def _warn_once(self, event: str, error: str) -> None:
        """Given a warning repeated every second while it lasts (a full disk), log it once until it ends."""
        if event not in self._said:
            self._said.add(event)
            log.warning(event, error=error)

    def snapshot(self) -> HealthSnapshot:
        """Return the health snapshot the web listener and the metrics serve (and health.json holds)."""
        pruned = self.pruner.totals if self.pruner is not None else {}
        return snapshot_of(self.health(), self.stages, self.lock.describe(), pruned)

    def _start_web(self, relay: Relay) -> None:
        """Serve /metrics, /healthz and the status page on [metrics] listen, when it is set."""
        if not self.cfg.metrics.listen:
            return
        from onss_relay.listener import start_listener  # prometheus_client and jinja2: not in memory when unused

        self.web = start_listener(lambda: self.cfg, relay, self.snapshot)
