"""Which spool a PostgreSQL journal's sets are in: the first relay to lead writes a random id into the journal
(``journal_meta``) and into the spool (``<root>/journal-id``); a relay whose spool holds no id or another one
refuses to lead. Two machines share the spool on storage both mount: a standby whose share was not mounted
(an empty local folder) took over and gave up every set left mid-upload as failed (their files were on the
share). With SQLite the journal is in the spool itself: nothing to check."""

from __future__ import annotations

import secrets
from pathlib import Path

import structlog

from onss_relay.durable import atomic_write
from onss_relay.errors import ConfigError
from onss_relay.journal import Journal, State

log = structlog.get_logger(__name__)

MARK = "journal-id"


def check_spool_identity(root: Path, journal: Journal) -> None:
    """Given the spool root and a PostgreSQL journal (anything else is left alone), make sure the spool is the one
    the journal's sets are in: record the id on both sides the first time, raise ConfigError (one sentence: is the
    shared storage mounted?) when the spool holds no id while the journal has one, or another id."""
    from onss_relay.journal.postgres import PostgresJournal

    if not isinstance(journal, PostgresJournal):
        return
    mark = root / MARK
    local = mark.read_text().strip() if mark.exists() else None
    stored, recorded = journal.spool_id(local or secrets.token_hex(16))
    if local == stored:
        return
    # the journal had no id yet (a new journal, or one of before this check), or it has no set: this spool is its
    if local is None and (recorded or not journal.sets_in(*State, limit=1)):
        atomic_write(mark, f"{stored}\n".encode())
        log.info("spool_identity_recorded", spool=str(root), journal=journal.path)
        return
    found = f"holds {MARK} {local}" if local else f"has no {MARK}"
    raise ConfigError(
        f"paths.root = {str(root)!r}: this spool {found}, but the journal {journal.path} keeps its sets in the spool"
        f" with {MARK} {stored}: is the shared storage mounted here? (nothing was done: a relay on the wrong spool"
        " would give up every set left mid-upload)"
    )
