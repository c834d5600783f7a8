"""The upload stage: send every signed set as its FI and FS parts, then the GO, exactly once.

The journal records ``go_sending`` before the GO put and ``sent`` after it. A set interrupted before
``go_sending`` is re-sent from its first file; one interrupted in ``go_sending`` only gets its GO again,
and only when its FI parts are still on the server and the GO is not. Several channels send several sets
at once; each set keeps its own order (FI and FS complete, then GO), which ``Upload`` enforces whatever the
transport.
The round, queue, gate commits and sent batches it runs on are in upload_queue.py, its connections in
upload_connections.py; the marker of requests possibly in flight, and what a start does after an unclean stop, in unclean_stop.py.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog
import tenacity

from onss_relay.config import Config
from onss_relay.errors import (
    BadInput,
    ConfigError,
    LocalError,
    PermanentRemoteError,
    RemoteError,
    TransientRemoteError,
    describe_os_error,
)
from onss_relay.journal import Change, DataChange, Journal, SetRow, State
from onss_relay.names import Env, upload_folder
from onss_relay.spool import Spool, same_as_signed
from onss_relay.stages.recovery import decide_uploading, go_not_needed
from onss_relay.stages.uncertain import (
    SERVER_LOOK,
    UNCERTAIN_STATES,
    describe,
    mark_uncertain,
    quiet_left,
    restart_after_reboot,
)
from onss_relay.stages.unclean_stop import InFlightMarker, after_unclean_stop
from onss_relay.stages.upload_connections import ConnectionPool
from onss_relay.stages.upload_queue import (
    PENDING,
    Channel,
    Gates,
    Round,
    SentBatch,
    Taken,
    UploadReport,
    WorkQueue,
)
from onss_relay.transport.base import ChangedWhileSending, PutFile, Step, Transport, Upload, UploadAbandoned

log = structlog.get_logger(__name__)

# A set's FI and FS parts are one step, their files put together (in parallel on SFTP), the GO the next: the ONSS
# asks only that the GO comes once the declaration and its signature are complete ("le fichier go ... indique que
# le transfert du fichier déclaration et du fichier signature est terminé"); FI then FS cost two round trips more.
FILES = "FI and FS"
WINDOW = 64  # sets in flight per SFTP session (remote.connections sessions share a connection)
# how long a queue found dry while sets are still being signed is left alone (seconds): every turn of the upload
# loop (a reply read) asked the signing child and read the journal again, ~40 times per set sent
DRY_WAIT = 0.01


class CannotSend(BadInput):
    """A claimed set cannot be sent as signed (changed since its claim, signed copy or FS gone); it is
    quarantined, not sent."""


class Uploader:
    """Given the configuration, journal, spool and a transport factory, send pending sets.

    Threads each hold one connection and pull sets from a shared queue: ``remote.connections`` of them for
    FTP and local folders; one for SFTP, whose connection carries ``remote.connections`` sessions with many
    sets in flight on each (pipelined requests). After a transient error a thread
    puts its unfinished sets back in the queue, reconnects with backoff and carries on.
    """

    def __init__(
        self,
        cfg: Config,
        journal: Journal,
        spool: Spool,
        connect: Callable[[], Transport],
        *,
        stop: threading.Event | None = None,
        max_attempts: int | None = 5,
        max_wait: float = 60.0,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.pool = ConnectionPool(connect)
        self.stop = stop or threading.Event()
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        # told of each failed attempt and of each set sent (the daemon's health counts the retries made
        # inside a round, which never return while the remote is down)
        self.on_retry: Callable[[str, float | None], None] | None = None  # (error, seconds to the next try)
        self.on_progress: Callable[[], None] | None = None
        # raises (Fenced) when this relay may put nothing more, a GO above all: its leadership lapsed (PostgreSQL)
        self.before_put: Callable[[], None] = lambda: None
        # sets in flight per connection: halved after each attempt without progress, kept across rounds (sets
        # left uncertain by a failed attempt come back in a later round: at once, they would all fail again)
        self.full_window = WINDOW * cfg.remote.connections
        self.window = self.full_window
        # requests possibly in flight on connections that can deliver late: a process that finds this marker at
        # its first round knows the last one stopped uncleanly (unclean_stop.py)
        self.marker = InFlightMarker(cfg.paths.root)
        self.unclean_stop_checked = False
        self.unrecorded = False  # a connection was given up with requests in flight the journal could not record

    def warm_up(self) -> None:
        """Start connecting in the background, so that the first upload finds its connection ready."""
        self.pool.warm_up()

    def freshen(self) -> None:
        """Sets may come soon: prove the connection kept idle in the background (replaced if it died)."""
        self.pool.freshen()

    def close_idle(self, older_than: float = 0.0) -> None:
        """Close the connections kept with nothing to send for ``older_than`` seconds (all: 0)."""
        self.pool.close_idle(older_than)

    def keep_warm(self) -> None:
        """Between rounds (the daemon): close the connections idle past remote.keep_open, ask the others
        every remote.keepalive whether they are alive, and replace a dead one ahead of need."""
        self.pool.close_idle(float(self.cfg.remote.keep_open))
        self.pool.tend(float(self.cfg.remote.keepalive))

    def upload_pending(self, more: Callable[[], bool] | None = None) -> UploadReport:
        """Send every set in signed/uploading/go_sending, over up to remote.connections connections.

        Sets signed while this runs are picked up too: the queue refills from the journal when it runs dry.
        With ``more`` (true while sets may still be signed), a dry queue keeps the connections open and
        waits for them instead of returning.
        """
        self.archive_finished()
        quiet = self.cfg.remote.quiet_period
        if not self.unclean_stop_checked:  # before this process sets the marker itself
            after_unclean_stop(self.journal, self.marker, quiet)
            self.unclean_stop_checked = True
        restart_after_reboot(self.journal, self.journal.sets_in(*UNCERTAIN_STATES), quiet)
        round_ = Round(WorkQueue(self.journal, quiet), UploadReport(), more)
        if not round_.work.refill() and not (more and more()):
            round_.report.waiting = self.waiting()
            return round_.report
        # SFTP runs its remote.connections sessions over one SSH connection from one thread (sftp_pipeline.py):
        # threads would only contend for the interpreter. FTP and local folders use a connection per thread.
        sftp = self.cfg.remote.transport == "sftp"
        n = max(1, min(1 if sftp else self.cfg.remote.connections, round_.work.size()))
        threads = [
            threading.Thread(target=_Worker(self, round_).run, name=f"upload-{i}", daemon=True) for i in range(n)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not self.unrecorded:  # every connection closed, kept with nothing unanswered, or its sets uncertain
            self.marker.clear()
        round_.report.waiting = self.waiting()
        return round_.report

    def waiting(self) -> list[str]:
        """One sentence per set still uncertain after the round: why it waits and until when. One whose quiet
        period ended during the round, after the queue had passed it, is said too (it is finished by the next
        round: `send --once` must not end "all sent" with it undone)."""
        quiet = self.cfg.remote.quiet_period
        return [describe(r, quiet) for r in self.journal.sets_in(*UNCERTAIN_STATES) if r.data.uncertain is not None]

    def sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # a stop request ends the backoff at once

    def check_unchanged(self, row: SetRow) -> None:
        """Given a set about to be sent, raise CannotSend if an FI was rewritten since it was claimed,
        and OSError if one of its files is gone or unreadable."""
        work, outbox = os.fspath(self.spool.work), os.fspath(self.spool.outbox)  # strings: twice per set sent
        for name in (*row.data.fs, *row.data.digests):
            if not _exists(os.path.join(work, name)):
                what = "signature file" if name in row.data.fs else "signed copy of the declaration"
                raise CannotSend(f"{what} missing from work/", f"{name}: not in {self.spool.work}; nothing was sent")
        for fi in row.parts:
            fd = os.open(os.path.join(outbox, fi), os.O_RDONLY)  # readable: permission denied shows here
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if same_as_signed(row, self.spool.outbox / fi, st):  # a chmod or a hard link alone is no change
                continue
            expected = row.data.sizes[fi]
            detail = (
                f"{fi}: {expected} bytes when claimed, {st.st_size} bytes now"
                if st.st_size != expected
                else f"{fi}: rewritten after it was claimed and signed (same size, new content?)"
            )
            raise CannotSend("declaration changed after it was claimed", detail)

    def archive(self, rows: list[SetRow]) -> None:
        """Given sets already recorded as done, move their FI, FS and a GO into sent/YYYY-MM-DD/ and mark them
        archived."""
        if rows:
            dest = str(self.spool.archive_sets(rows))
            self.journal.mark_archived({r.go_name: dest for r in rows})

    def archive_finished(self) -> None:
        """Complete the archiving of sets that were recorded done (an answer came first) or sent before a crash."""
        self.archive(self.journal.unarchived_done())


def _exists(path: str) -> bool:
    """Given a path, whether it exists, as Path.exists says (False when absent; an error such as permission
    denied raised), without making a Path."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:  # a NUL in the name
        return False
    return True


class _Worker:
    """One upload thread: its connection, the sets it has in flight, and its attempts without progress."""

    def __init__(self, uploader: Uploader, round_: Round) -> None:
        self.u = uploader
        self.round = round_
        self.channel = Channel(uploader.pool.take)
        self.failures = 0  # consecutive attempts without progress
        self.inflight: set[str] = set()
        self.uploads: dict[str, Upload] = {}  # of the sets in flight: which have requests unanswered
        self.go_put: str | None = None  # a set whose GO recovery is putting its GO now
        self.taken = Taken(round_.work, uploader.journal)  # sets taken from the queue, not started yet
        self.dry_until = 0.0  # the queue was found dry while sets were being signed: not asked again before then

    def run(self) -> None:
        u = self.u
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientRemoteError),
            wait=tenacity.wait_random_exponential(multiplier=0.5, max=u.max_wait),
            stop=self._give_up,
            sleep=u.sleep,
            before_sleep=self._retrying,
            reraise=True,
        )
        try:
            retrying(self._drain)
        except (RemoteError, LocalError, ConfigError) as e:  # ConfigError: a bad key or known_hosts line
            log.error("upload_stopped", error=str(e))
            self.round.fail(e)
        except OSError as e:  # the spool: a full disk, a permission denied (a local problem, not the remote's)
            error = LocalError(describe_os_error(e, "uploading"))
            log.error("upload_stopped", error=str(error))
            self.round.fail(error)
        except Exception as e:  # a bug: say so loudly, keep the sets queued, let the caller retry later
            log.exception("upload_crashed", error=repr(e))
            self.round.fail(TransientRemoteError(f"internal error while uploading: {e!r}"))
        else:
            kept = self.channel.detach()  # it worked: keep it open for the next sets (close_idle ends it)
            if kept is not None:
                u.pool.keep(kept)
        finally:
            self.taken.put_back()  # stopped or aborted: what it took and did not start stays queued
            self.channel.reset()

    def _retrying(self, rs: tenacity.RetryCallState) -> None:
        error = str(rs.outcome.exception()) if rs.outcome else "?"
        delay = round(rs.next_action.sleep, 1) if rs.next_action else None
        queued = self.round.work.size()
        log.warning("upload_retry", attempt=self.failures, retry_in_s=delay, sets_waiting=queued, error=error)
        if self.u.on_retry is not None:
            self.u.on_retry(error, delay)

    def _give_up(self, rs: tenacity.RetryCallState) -> bool:
        return (
            self.u.stop.is_set()
            or self.round.abort.is_set()
            or (self.u.max_attempts is not None and self.failures >= self.u.max_attempts)
        )

    def _drain(self) -> None:
        """Feed this thread's connection from the queue until it is empty; on error, requeue what was in flight.

        A link that keeps dropping before any set completes gets fewer sets in flight each time (down to
        one), so that some always get through.
        """
        sent = SentBatch(self.u.journal, self.u.spool, self._sent)
        gates = Gates(self.u.journal)
        sent_before = len(self.round.report.sent)
        try:
            t = self.channel.get()
            if t.delivers_late:
                self.u.marker.set()  # durable before the first request of the round
            t.run_uploads(self._feed(t, sent, gates), self.u.window)
            sent.flush()
            if len(self.round.report.sent) > sent_before:  # sets went through: all in flight again
                self.u.window = self.u.full_window
        except ChangedWhileSending as e:  # one set's bytes are not what was signed: it goes, the others go on
            self._requeue_after_error(sent, counts=False, except_for=e.key)
            self._quarantine(e.key, e.reason, e.detail)
            raise TransientRemoteError(f"{e.key}: {e.reason}; the others are sent again") from None
        except BaseException:
            self._requeue_after_error(sent, counts=len(self.round.report.sent) == sent_before)
            raise

    def _requeue_after_error(self, sent: SentBatch, counts: bool, except_for: str | None = None) -> None:
        """After a failed run: record what was sent, record uncertain the sets with a request in flight on the
        connection, drop it abortively, and put the other sets in flight back in the queue; ``counts`` when the
        run made no progress (fewer sets in flight next time)."""
        sent.flush_after_error()
        self.failures = self.failures + 1 if counts else 0
        self.u.window = max(1, self.u.window // 2) if counts else self.u.window
        uncertain = self._requests_in_flight()
        self.channel.abort()
        try:
            mark_uncertain(self.u.journal, uncertain, self.u.cfg.remote.quiet_period)
        except BaseException:
            self.u.unrecorded = True  # the marker stays for good: the next start treats its sets as uncertain
            raise
        finally:  # even when the journal cannot record it, nothing more of them is put in this round
            for go_name in self.inflight - {except_for} - uncertain.keys():
                self.round.work.put_back(go_name)
            self.taken.put_back()
            for go_name in uncertain:
                self.round.work.forget(go_name)  # taken again once its quiet period has passed
            self.inflight.clear()
            self.uploads.clear()
            self.go_put = None

    def _requests_in_flight(self) -> dict[str, str]:
        """The sets with a request sent on the connection and not answered (GO name → its step), when the
        connection is one whose requests can still arrive after it is given up."""
        t = self.channel.current()
        if t is None or not t.delivers_late:
            return {}
        steps = {k: step for k, up in self.uploads.items() if k in self.inflight and (step := up.step_in_flight())}
        if self.go_put is not None:
            steps[self.go_put] = "GO"
        return steps

    def _quarantine(self, go_name: str, reason: str, detail: str) -> None:
        row = self.u.journal.get_set(go_name)
        if row is not None and row.state in (State.SIGNED, State.UPLOADING):
            self._set_aside(row, reason, detail)

    def _set_aside(self, row: SetRow, reason: str, detail: str) -> None:
        """Quarantine one set the round cannot send; the others go on."""
        self.u.spool.quarantine_claimed(self.u.journal, row, reason, detail)
        self.round.add("quarantined", [row.go_name])
        self.inflight.discard(row.go_name)

    def _finish_or_wait(self, t: Transport, row: SetRow, sent: SentBatch) -> None:
        """Given a set in go_sending, finish it (``_finish_go``), or, when the server cannot be read to decide it,
        let it wait (``_undecided``) while the round goes on."""
        try:
            sent.add(row, *self._finish_go(t, row))
        except PermanentRemoteError as e:
            if self.go_put == row.go_name:
                raise  # its GO itself was refused: the stage's error, as for any put
            self._undecided(row, e)

    def _undecided(self, row: SetRow, e: PermanentRemoteError) -> None:
        """A set in go_sending whose server could not be read to decide its GO (its OUT folder refused, say):
        recorded uncertain (status says why and until when), read again after the quiet period; the round and
        every other set go on."""
        mark_uncertain(
            self.u.journal,
            {row.go_name: SERVER_LOOK},
            self.u.cfg.remote.quiet_period,
            why=f"the server could not be read to decide whether its GO is needed: {e}",
        )
        self.inflight.discard(row.go_name)
        self.round.work.forget(row.go_name)  # taken again once its quiet period has passed

    def _sent(self, go_names: list[str]) -> None:
        self.inflight.difference_update(go_names)
        for go_name in go_names:
            self.uploads.pop(go_name, None)
        self.round.add("sent", go_names)
        if self.u.on_progress is not None:
            self.u.on_progress()

    def _feed(self, t: Transport, sent: SentBatch, gates: Gates) -> Iterator[Upload | None]:
        """Yield an Upload per pending set; None when the queue is dry but ``more`` says sets are coming."""
        while not self.round.abort.is_set() and not self.u.stop.is_set():
            dry = not self.taken.names  # taking the next set reads the queue, perhaps the journal
            if dry and time.monotonic() < self.dry_until:
                yield None  # found dry a moment ago: neither the signing child nor the journal is asked again yet
                continue
            more = self.round.more
            # asked before the refill: nothing signed in between is missed (only needed when a refill may come)
            coming = dry and more is not None and more()
            taken = self.taken.next()
            if taken is None:
                if coming:
                    self.dry_until = time.monotonic() + DRY_WAIT
                    yield None
                    continue
                return
            go_name, row = taken
            assert row is not None
            if row.data.uncertain is not None and quiet_left(row.data.uncertain, self.u.cfg.remote.quiet_period):
                self.round.work.forget(go_name)  # given up meanwhile by another thread: not before its time
                continue
            if row.state not in PENDING:
                continue
            self.inflight.add(go_name)  # from here on, put back in the queue if this connection fails
            if row.state == State.UPLOADING and row.data.uncertain is not None:
                row = decide_uploading(t, self.u.journal, row)
            if row.state == State.GO_SENDING:  # interrupted after go_sending: never re-send FI or FS
                self._finish_or_wait(t, row, sent)
            else:
                up = self.uploads[go_name] = self._upload_for(row, sent, gates)
                yield up

    def _upload_for(self, row: SetRow, sent: SentBatch, gates: Gates) -> Upload:
        """Given a signed set, the Upload of its two steps: its FI and FS parts together, then its GO."""
        folder = upload_folder(Env(row.env))

        def fi(name: str) -> PutFile:  # the signed copy, checked byte for byte as it is sent
            digest = row.data.digests.get(name)
            local = (self.u.spool.work if digest else self.u.spool.outbox) / name
            return PutFile(folder, name, local, digest=digest, key=row.go_name)

        steps = [
            Step(FILES, [fi(n) for n in row.parts] + [PutFile(folder, n, self.u.spool.work / n) for n in row.data.fs]),
            Step("GO", [PutFile(folder, row.go_name)]),
        ]

        def gate(step: Step) -> None:
            if step.name == FILES:
                self._check_or_quarantine(row)
                gates.add(Change(row.go_name, State.UPLOADING, data=DataChange(uncertain=None)))  # sent again whole
            elif step.name == "GO":
                self.u.before_put()
                self._check_or_quarantine(row)  # an original changed since its claim stops the set before its GO
                gates.add(Change(row.go_name, State.GO_SENDING))  # durable before the GO is opened (Upload)

        return Upload(row.go_name, steps, gate, lambda: sent.add(row, folder), gates.commit, self.u.before_put)

    def _check_or_quarantine(self, row: SetRow) -> None:
        """Given a set at its first gate, quarantine it (and go on with the others) if it cannot be sent."""
        try:
            self.u.check_unchanged(row)
            return
        except CannotSend as e:
            reason, detail = e.reason, e.detail
        except OSError as e:
            reason, detail = self.u.spool.why_unreadable(row, Path(e.filename).name if e.filename else row.parts[0], e)
        self._set_aside(row, reason, detail)
        raise UploadAbandoned

    def _finish_go(self, t: Transport, row: SetRow) -> tuple[str, str]:
        """Given a set in go_sending, put its GO unless the server has it already or has consumed the set;
        return the folder and what was done."""
        folder = upload_folder(Env(row.env))
        done = go_not_needed(t, row, self.u.cfg.poll.max_size)
        if done is not None:
            return folder, done
        self.u.before_put()
        self.go_put = row.go_name  # in flight: uncertain if the connection is given up before it is answered
        try:
            t.put_bytes(b"", folder, row.go_name)
        except RemoteError as e:
            self.go_put = None if e.answered else self.go_put
            raise
        self.go_put = None
        return folder, "GO uploaded"
