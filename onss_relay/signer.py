"""The signing stage: for each queued set, write one verified FS per FI part into work/<GO name>/.

A pre-made FS dropped beside its FI is verified and used instead. Environment S gets no FS unless
signing.sign_simulation is set (the transfer point may refuse one there: ACRF-121).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from onss_relay import signing
from onss_relay.config import Config, read_secret
from onss_relay.errors import CertificateError, SignatureError
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import Env, format_name, fs_name_for, parse_name
from onss_relay.spool import Spool, atomic_write

log = structlog.get_logger(__name__)


def load_signing_identity(cfg: Config) -> signing.Identity:
    """Given the configuration, load the signing identity and refuse an expired or not-yet-valid one."""
    s = cfg.signing
    identity = signing.load_identity(s.key, s.certificate, read_secret(s.password_file, "signing.password_file"))
    warning = signing.check_certificate(identity, warning_days=s.expiry_warning_days)
    if warning:
        log.warning("certificate_expiring", detail=warning, days_left=signing.days_left(identity))
    return identity


class Signer:
    """Given the configuration, journal, spool and a lazily loaded identity, sign queued sets."""

    def __init__(self, cfg: Config, journal: Journal, spool: Spool, identity: signing.Identity | None = None,
                 stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self._identity = identity
        self.stop = stop

    def identity(self) -> signing.Identity:
        if self._identity is None:
            self._identity = load_signing_identity(self.cfg)
        else:
            signing.check_certificate(self._identity, warning_days=-1)
        return self._identity

    def sign_queued(self, progress: Callable[[], None] | None = None, every: int = 25) -> int:
        """Sign every queued set; return how many became signed. CertificateError stops the stage.

        ``progress`` is called every ``every`` signed sets, so that uploading can start before the last one.
        """
        done = 0
        for row in self.journal.sets_in(State.QUEUED):
            if self.stop_requested():
                break
            if self.sign_set(row):
                done += 1
                if progress is not None and done % every == 0:
                    progress()
        return done

    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def sign_set(self, row: SetRow) -> bool:
        """Given a queued set, write its FS files and mark it signed; quarantine it on bad input."""
        env = parse_name(row.go_name).env
        wants_fs = env != Env.S or self.cfg.signing.sign_simulation
        work = self.spool.work_dir_for(row.go_name)
        work.mkdir(parents=True, exist_ok=True)
        fs_names = []
        try:
            for fi_name in row.parts:
                fi = self.spool.outbox / fi_name
                if fi.stat().st_size == 0:
                    raise SignatureError(f"{fi_name}: the declaration is empty")
                if wants_fs:
                    fs_names.append(self._write_fs(fi, work, row))
        except CertificateError:
            raise
        except SignatureError as e:
            self.spool.quarantine_claimed(self.journal, row, "cannot sign", str(e))
            return False
        except FileNotFoundError as e:
            self.spool.quarantine_claimed(self.journal, row, "declaration vanished from the outbox", f"{e.filename}")
            return False
        self.journal.transition(row.go_name, State.SIGNED, fs=fs_names)
        log.info("set_signed", set=row.go_name, state="signed", signatures=len(fs_names))
        return True

    def _write_fs(self, fi: Path, work: Path, row: SetRow) -> str:
        fs_name = format_name(fs_name_for(parse_name(fi.name)))
        premade = self.spool.outbox / fs_name
        target = work / fs_name
        if fs_name in row.data.get("extras", []) and premade.exists():
            try:
                signing.verify(fi, premade.read_bytes())
            except SignatureError as e:
                raise SignatureError(f"{fs_name} (dropped beside its FI) does not verify: {e}") from None
            shutil.copyfile(premade, target)
            return fs_name
        s = self.cfg.signing
        atomic_write(target, signing.fs_content_for(self.identity(), fi, s.digest, s.layout))
        return fs_name
