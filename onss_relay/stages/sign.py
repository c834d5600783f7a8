"""The sign stage: for each queued set, write one checked FS per FI part into work/.

A pre-made FS dropped beside its FI is verified and used instead. Every environment gets its FS, as the
ONSS documents ask; signing.sign_in_s = false leaves S without one (for a transfer point that refuses it there).
"""

from __future__ import annotations

import dataclasses
import errno
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import structlog

from onss_relay import signature
from onss_relay.config import Config
from onss_relay.config_rules import unsigned_s_problem
from onss_relay.durable import BatchWriter
from onss_relay.errors import CertificateError, LocalError, SignatureError, describe_os_error
from onss_relay.identity import Identity, check_certificate, load_signing_identity
from onss_relay.journal import Change, DataChange, Journal, SetRow, State
from onss_relay.names import Env, format_name, fs_name_for, parse_name
from onss_relay.process_pool import ProcessPool
from onss_relay.spool import Spool

log = structlog.get_logger(__name__)

Content = bytes | Future[bytes]  # an FS's content, or the signing thread's work that returns it

BATCH = 25  # sets signed per journal commit
SIGNING = ProcessPool(2, "sign")  # threads making signatures: the key's arithmetic runs without the interpreter lock
# errors writing into work/: the machine's problem, not the declaration's
LOCAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# read errors worth another try rather than a quarantine (NFS/SMB outboxes, interrupted calls)
TRANSIENT_READ_ERRORS = frozenset(
    {errno.EAGAIN, errno.EINTR, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.ENOLCK}
)


@dataclasses.dataclass
class _Started:
    """A set whose parts are copied: their digests, their FS (FI name, FS name, content), or what went wrong."""

    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    fs: list[tuple[str, str, Content]] = dataclasses.field(default_factory=list)
    failed: tuple[str, SignatureError | OSError] | None = None  # the part at fault and why


class Signer:
    """Given the configuration, journal, spool and a lazily loaded identity, sign queued sets."""

    def __init__(
        self,
        cfg: Config,
        journal: Journal,
        spool: Spool,
        identity: Identity | None = None,
        stop: threading.Event | None = None,
        load: Callable[[Config], Identity] = load_signing_identity,
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self._identity = identity
        self._load = load  # how the identity is loaded when first needed
        self.stop = stop
        if unsigned := unsigned_s_problem(cfg.signing.sign_in_s, cfg.watch.environments):
            log.warning("environment_s_unsigned", detail=unsigned)

    def identity(self) -> Identity:
        if self._identity is None:
            self._identity = self._load(self.cfg)
        else:
            check_certificate(self._identity, warning_days=-1)
        return self._identity

    def sign_queued(self, progress: Callable[[], None] | None = None) -> int:
        """Sign every queued set; return how many became signed. CertificateError stops the stage.

        Sets are signed in batches of BATCH: the batch's FS files are written, then fsynced and renamed
        into work/ together (BatchWriter), then the batch is marked signed in one journal commit.
        ``progress`` is called after each commit, so that uploading starts before the last set is signed.
        """
        done = 0
        passed: set[str] = set()  # sets left queued this round (a read worth another try): not read again
        while not self.stop_requested():
            # a batch at a time from the journal, not every queued row at once: a full outbox claimed in pages
            # keeps queueing while this signs, and memory stays that of one batch
            queued = [
                r for r in self.journal.sets_in(State.QUEUED, limit=BATCH + len(passed)) if r.go_name not in passed
            ]
            if not queued:
                break
            writer = BatchWriter(self.spool.work)
            try:
                changes = self._sign_batch(queued, writer)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            passed |= {name for name, change in changes if change is None}
            signed = [change for _, change in changes if change is not None]
            if not signed:
                continue
            self.journal.transition_many(signed)
            done += len(signed)
            if progress is not None:
                progress()
        return done

    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _sign_batch(self, rows: list[SetRow], writer: BatchWriter) -> list[tuple[str, Change | None]]:
        """Given a batch of queued sets, copy their parts into work/ and write their FS files; return each set's
        change to signed (None: quarantined, or left queued for another try).

        Each signature is made on a signing thread as soon as its part is copied, while the next sets are copied
        and the other thread signs: the key's arithmetic (a third of a set's time) lets go of the interpreter
        lock, so copying and two signatures go on at once. The FS files are written in the sets' order."""
        started = [(row, self._start(row, writer)) for row in rows]
        return [(row.go_name, self._finish(row, set_, writer)) for row, set_ in started]

    def _start(self, row: SetRow, writer: BatchWriter) -> _Started:
        """Given a queued set, copy its parts and start making their FS contents; a problem is kept for _finish."""
        env = parse_name(row.go_name).env
        wants_fs = env != Env.S or self.cfg.signing.sign_in_s
        started = _Started()
        fi_name = row.parts[0]
        algorithm = self.cfg.signing.digest
        try:
            for fi_name in row.parts:
                fi = self.spool.outbox / fi_name
                if fi.stat().st_size == 0:
                    raise SignatureError(f"{fi_name}: the declaration is empty")
                # what is signed, sent and archived is this private copy: a writer of the outbox file cannot
                # change it any more (the uploader checks every byte it sends against this digest)
                digest = writer.copy(fi_name, fi, algorithm)
                started.digests[fi_name] = f"{algorithm}:{digest.hex()}"
                if wants_fs:
                    started.fs.append((fi_name, *self._fs_content(writer.staged(fi_name), fi_name, digest, row)))
        except CertificateError:
            raise
        except (SignatureError, OSError) as e:
            started.failed = (fi_name, e)
        return started

    def _finish(self, row: SetRow, started: _Started, writer: BatchWriter) -> Change | None:
        """Given a set started, write its FS files into work/; return its change to signed, or set it aside."""
        fi_name = row.parts[0]
        try:
            if started.failed is not None:
                fi_name, error = started.failed
                raise error
            for fi_name, fs_name, content in started.fs:  # noqa: B007 (fi_name: the part an error names)
                writer.write(fs_name, content.result() if isinstance(content, Future) else content)
        except CertificateError:
            raise
        except (SignatureError, OSError) as e:
            fs_all = [format_name(fs_name_for(parse_name(n))) for n in row.parts]
            writer.discard([*row.parts, *fs_all])  # this set's copies and FS written so far go nowhere
            self._set_aside(row, fi_name, e)
            return None
        fs_names = tuple(fs_name for _, fs_name, _ in started.fs)
        return Change(row.go_name, State.SIGNED, data=DataChange(fs=fs_names, digests=started.digests))

    def _set_aside(self, row: SetRow, fi_name: str, error: SignatureError | OSError) -> None:
        """Given a set that could not be signed and why, quarantine it, or leave it queued for another try
        (a read error worth retrying), or raise LocalError (work/ cannot be written)."""
        if isinstance(error, SignatureError):
            self.spool.quarantine_claimed(self.journal, row, "cannot sign", str(error))
            return
        if error.errno in LOCAL_WRITE_ERRORS:  # work/ cannot take the copy or the FS: stop, nothing is lost
            raise LocalError(describe_os_error(error, f"signing {row.go_name}")) from None
        if error.errno in TRANSIENT_READ_ERRORS:  # e.g. a network share that blinked: try again next round
            log.warning("declaration_unreadable", set=row.go_name, file=fi_name, error=error.strerror, retry=True)
            return
        # gone, permission denied, …: this set is quarantined, the others go on
        self.spool.quarantine_claimed(self.journal, row, *self.spool.why_unreadable(row, fi_name, error))

    def _fs_content(self, snapshot: Path, fi_name: str, digest: bytes, row: SetRow) -> tuple[str, Content]:
        """Given the FI's snapshot (still under its temp name) and its digest, return its FS name and content: a
        pre-made FS checked now, or the one being signed on a signing thread."""
        fs_name = format_name(fs_name_for(parse_name(fi_name)))
        premade = self.spool.outbox / fs_name if fs_name in row.data.extras else None
        if premade is not None and premade.exists():
            content = premade.read_bytes()
            try:
                signature.verify(snapshot, content)
            except SignatureError as e:
                raise SignatureError(f"{fs_name} (dropped beside its FI) does not verify: {e}") from None
            return fs_name, content
        s = self.cfg.signing
        # loaded once, here; fs_content_for checks the certificate against this FS's own signing time
        identity = self._identity or self.identity()
        return fs_name, SIGNING.get().submit(signature.fs_content_for, identity, snapshot, s.digest, s.layout, digest)
