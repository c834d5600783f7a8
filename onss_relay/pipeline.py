"""The pipeline: the stages (claim, sign, upload, poll, link) wired over one journal and spool.

Used by `send`, `poll`, `run` (through ``daemon.py``) and `demo`. ``Relay.apply`` takes a reloaded configuration.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable

import structlog

from onss_relay.commands.requeue import finish_interrupted_requeues
from onss_relay.config import Config
from onss_relay.forked import Forked, heap_frozen
from onss_relay.hook_record import HookRecord
from onss_relay.hooks import DueOnly
from onss_relay.identity import load_signing_identity
from onss_relay.identity_ahead import IdentityAhead
from onss_relay.journal import IN_FLIGHT, Journal, State, open_journal
from onss_relay.orphan_temps import remove_orphan_temps
from onss_relay.results import ResultsWriter, WhileSending
from onss_relay.spool import Spool
from onss_relay.stages.claim import Claimer
from onss_relay.stages.link import process_responses
from onss_relay.stages.poll import Poller, PollReport
from onss_relay.stages.sign import Signer
from onss_relay.stages.upload import Uploader
from onss_relay.stages.upload_queue import UploadReport
from onss_relay.transport import open_transport
from onss_relay.transport.base import Transport
from onss_relay.waiting import overdue_sets

log = structlog.get_logger(__name__)


OVERDUE_READ = 20_000  # overdue sets read per poll to warn of the new ones (each warned once per process)


@dataclasses.dataclass
class SendReport:
    claimed: int  # sets claimed by this run (a count: the names of 100,000 sets were ~10 MB sent to the parent)
    upload: UploadReport
    quarantined_before: int
    quarantined_after: int
    sets_failed: int = 0  # sets recorded failed during the run (some had no file left to move)
    stopped: bool = False  # ended early by a stop request (SIGTERM): the next run goes on

    @property
    def quarantined(self) -> int:
        """Files moved to failed/ during the run (by the claim, sign and upload stages), and at least one per set
        given up whose files were already gone: never 0 when something was refused."""
        return max(self.quarantined_after - self.quarantined_before, self.sets_failed, len(self.upload.quarantined))

    @property
    def sets_quarantined(self) -> int:
        """Sets given up during the run (refused at the claim, while signing or at the upload)."""
        return max(self.sets_failed, len(self.upload.quarantined))

    @property
    def files_quarantined(self) -> int:
        """Files moved to failed/ during the run (a set's parts, its extras, files that belong to no set)."""
        return max(self.quarantined_after - self.quarantined_before, 0)

    @property
    def failed(self) -> bool:
        """Whether anything was refused: a file quarantined, or a set given up (its files may be gone)."""
        return self.quarantined > 0


class Relay:
    """Given the configuration (and optionally a transport factory and a stop event), run the stages."""

    def __init__(
        self,
        cfg: Config,
        connect: Callable[[], Transport] | None = None,
        stop: threading.Event | None = None,
        max_attempts: int | None = 5,
        epoch: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.epoch = epoch  # the leadership epoch every journal write must still hold (PostgreSQL), or None
        self.stop = stop or threading.Event()
        self.spool = Spool(cfg.paths)
        self.spool.stop = self.stop  # the held originals' sweep ends between two files at a stop
        self.spool.create()
        for folder in (self.spool.work, self.spool.paths.root, self.spool.outbox):  # what a killed run left
            remove_orphan_temps(folder)
        finish_interrupted_requeues(self.spool)
        self.journal = open_journal(cfg, epoch=epoch)
        self.connect = connect or (lambda: open_transport(cfg))
        self.claimer = Claimer(cfg, self.journal, self.spool)
        self.spool.still_open = self.claimer.tracker.busy  # what the watcher's events say, once it runs
        self.signer = Signer(cfg, self.journal, self.spool, stop=self.stop)
        self.uploader = Uploader(cfg, self.journal, self.spool, self.connect, stop=self.stop, max_attempts=max_attempts)
        self.poller = Poller(cfg, self.journal, self.spool, stop=self.stop)
        self.poller.remove_stale_temps()
        self.results = ResultsWriter(self.spool, self.journal)
        if cfg.hooks.on_result:  # `send`/`poll` run no hook: what it must be told of is due for the daemon
            self.results.on_write = DueOnly(HookRecord(self.spool.paths.root)).result_written
        self._warned_overdue: set[str] = set()
        self._waiting_retried = False  # waiting notifications are retried at the first poll of a process

    def apply(self, cfg: Config) -> None:
        """Given a reloaded configuration, apply what can change while running: [watch] and [poll]."""
        self.cfg = dataclasses.replace(self.cfg, watch=cfg.watch, poll=cfg.poll)
        self.claimer.apply(self.cfg)
        self.poller.cfg = self.cfg

    def close(self) -> None:
        self.uploader.close_idle()
        self.claimer.close()
        self.journal.close()

    def claim(self, wait_for_settle: bool = False) -> list[str]:
        """Scan the outbox; with wait_for_settle, scan again once the settle delay has passed."""
        return claim(self.claimer, self.stop, wait_for_settle)

    def send_once(self, wait_for_settle: bool = True) -> SendReport:
        """Claim, sign and upload everything ready in the outbox now; uploading starts while signing goes on.

        Claiming and signing run in a forked child (forked.py) with its own journal connection, so that
        they and uploading each have a core; the uploader takes sets as their signing batches commit.
        """
        before = self._failed_count()
        failed_sets = self._failed_sets()  # a count: a year of quarantined sets is never read

        ahead = IdentityAhead()  # the identity loaded by this process while the child claims its first page

        def claim_and_sign(journal: Journal) -> int:
            spool = Spool(self.cfg.paths)
            signer = Signer(
                self.cfg, journal, spool, load=lambda cfg: ahead.receive(lambda: load_signing_identity(cfg))
            )
            # each claimed page is signed before the next is claimed: uploading starts after the first page
            claimer = Claimer(self.cfg, journal, spool)
            try:
                claimed = claim(claimer, self.stop, wait_for_settle, signer.sign_queued)
            finally:
                claimer.close()
            signer.sign_queued()
            return len(claimed)

        with heap_frozen():  # the child forked, and the run's collections made, without the heap there is now
            claimed, upload = self._send_while_signing(claim_and_sign, ahead)
        return SendReport(
            claimed,
            upload,
            before,
            self._failed_count(),
            max(0, self._failed_sets() - failed_sets),
            stopped=self.stop.is_set(),
        )

    def _send_while_signing(
        self, claim_and_sign: Callable[[Journal], int], ahead: IdentityAhead
    ) -> tuple[int, UploadReport]:
        """Given the work of the claiming and signing child and the pipe its identity comes through, fork it, upload
        what it signs, write the results; return how many sets it claimed and the upload report."""
        child = Forked(
            claim_and_sign, lambda: open_journal(self.cfg, epoch=self.epoch), "onss-relay-sign"
        )  # before any thread
        sending = self._anything_to_send()
        # the identity loaded while the child scans the outbox and claims its first page, on this process's core
        # (not kept here: the uploading process holds no key once it is handed)
        ahead.hand((lambda: load_signing_identity(self.cfg)) if sending else None)
        if sending:
            self.uploader.warm_up()  # connect while the first sets are claimed and signed
        upload = UploadReport()
        claimed = 0
        try:
            with WhileSending(self.results, self.stop):  # sets sent get their results while the others go
                self._upload_while_signing(child, upload)
            if self.stop.is_set():
                child.stop()
            else:
                claimed = child.result()  # raises what stopped signing (an expired certificate: exit 2)
        finally:
            self.uploader.close_idle()
        self.results.catch_up(self.stop)
        return claimed, upload

    def _upload_while_signing(self, child: Forked[int], upload: UploadReport) -> None:
        """Given the forked signing child and the run's upload report, upload rounds until signing is done and a
        last round found everything signed, or an error or a stop; add each round to the report."""

        def signing() -> bool:
            return not child.done()

        while True:
            done_signing = not signing()
            round_ = self.uploader.upload_pending(more=signing)
            upload.sent += round_.sent
            upload.quarantined += round_.quarantined
            upload.error = upload.error or round_.error
            upload.waiting = round_.waiting  # uncertain sets, as the last round left them
            if done_signing or upload.error or self.stop.is_set():
                break
            if signing():  # a moment before the next round; signing over: the last round at once (a round
                self.stop.wait(0.05)  # usually ends because it is: 50 ms idle at the end of every send --once)

    def _anything_to_send(self) -> bool:
        if self.journal.sets_in(*IN_FLIGHT, limit=1):
            return True
        with os.scandir(self.spool.outbox) as entries:
            return any(e.name.startswith("FI.") for e in entries)

    def poll_once(self) -> PollReport:
        """Mirror the OUT folders once and link what arrived to the sets it answers."""
        t = self.connect()
        try:
            report = self.poller.poll_once(t)
        finally:
            t.close()
        process_responses(self.journal, retry_waiting=not self._waiting_retried, stop=self.stop)
        self._waiting_retried = True
        self.warn_overdue()
        self.results.catch_up(self.stop)
        report.stopped = report.stopped or self.stop.is_set()  # a stop in the link or the results: the next resumes
        return report

    def warn_overdue(self) -> list[str]:
        """Log one warning for each set newly past poll.acrf_overdue or poll.notification_overdue; return them."""
        now = time.time()
        late = []
        # only the sets already past their limit, oldest first, answered circuit tests left out by the journal's
        # index: reading every set sent or acknowledged held a year of circuit tests in memory (696 MB with
        # 200,000 of them: review rev29)
        for row, why in overdue_sets(self.journal, self.cfg.poll, now, OVERDUE_READ):
            if row.go_name not in self._warned_overdue:
                self._warned_overdue.add(row.go_name)
                late.append(row.go_name)
                log.warning("set_overdue", set=row.go_name, state=str(row.state), detail=why)
        return late

    def _failed_sets(self) -> int:
        """How many sets the journal holds quarantined (only a requeue, never during a send, takes one back)."""
        return self.journal.counts().get(State.FAILED, 0)

    def _failed_count(self) -> int:
        return sum(1 for p in self.spool.failed.iterdir() if p.name.endswith(".reason.json"))


def claim(
    claimer: Claimer, stop: threading.Event, wait_for_settle: bool, on_page: Callable[[], object] | None = None
) -> list[str]:
    """Given the claim stage, scan the outbox, calling on_page after each page claimed (committed); with
    wait_for_settle, scan again once the settle delay has passed. Return the claimed GO names."""
    claimed = claimer.scan(on_page)
    settle = claimer.cfg.watch.settle
    if wait_for_settle and settle > 0:
        stop.wait(settle + 0.05)
        claimed += claimer.scan(on_page)
    return claimed
