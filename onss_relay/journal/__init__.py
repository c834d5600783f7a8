"""The journal: the one store of state, behind one interface, opened by ``open_journal`` whatever the backend.

``model.py`` holds the states, the state machine and the typed per-set data; ``sql_journal.py`` the rules both
backends share; ``sqlite.py`` the embedded backend, ``postgres.py`` the one for an active/standby pair. Every
backend runs the journal contract test (tests/test_journal_contract.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from onss_relay.config import Config
from onss_relay.errors import JournalError
from onss_relay.journal.data_change import KEEP, DataChange, Keep
from onss_relay.journal.model import (
    DONE,
    IN_FLIGHT,
    OTHER_WAITING,
    TRANSITIONS,
    WAITING,
    WAITING_KINDS,
    AcrfRecord,
    AnomalyRecord,
    AnswerRecord,
    Change,
    CodeMeaning,
    NewSet,
    NotificationRecord,
    ResponseRow,
    SequenceKey,
    SetData,
    SetRow,
    State,
    Uncertain,
    WorkerResult,
    check_transition,
)

__all__ = [
    "DONE",
    "SequenceKey",
    "IN_FLIGHT",
    "TRANSITIONS",
    "WAITING",
    "OTHER_WAITING",
    "WAITING_KINDS",
    "AcrfRecord",
    "AnswerRecord",
    "AnomalyRecord",
    "Change",
    "DataChange",
    "KEEP",
    "Keep",
    "CodeMeaning",
    "Journal",
    "NewSet",
    "NotificationRecord",
    "ResponseRow",
    "SetData",
    "SetRow",
    "State",
    "check_transition",
    "Uncertain",
    "WorkerResult",
    "journal_exists",
    "journal_location",
    "open_journal",
    "open_journal_at",
    "sqlite_place_problem",
]


class Journal(Protocol):
    """Every set and response the relay knows, and their states. Safe to share between threads of one process;
    each process opens its own (never across fork()). Writes raise JournalBusy when another process holds
    the journal too long or its database cannot be reached, JournalError on a local failure (a full disk),
    Fenced when a newer leader took over (PostgreSQL), IllegalTransition on a bug.

    The rules (allowed state changes, merging of typed set data, the sequence-reuse check of ACRF-133) are
    written once above the backends (sql_journal.py, model.py); a backend owns only its connection."""

    def close(self) -> None:
        """Given an open journal, close its connection(s); nothing may use it afterwards."""
        ...

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Given a block, run every write made inside it (by this thread) as one transaction and return when it
        committed: an answer's link and its effect on its set are recorded together or not at all."""
        ...

    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """Given a block inside atomic(), undo its own writes (and only those) if it raises, then re-raise; one
        that returns keeps them for the outer commit. Outside atomic(), the same as atomic(): linking commits a
        page of answers at once, and one damaged answer is set aside without undoing the others."""
        ...

    # declaration sets
    def add_set(self, go_name: str, env: str, parts: list[str], data: SetData | None = None) -> None:
        """Given a new set (or one quarantined before), record it as queued; raise IllegalTransition otherwise."""
        ...

    def add_sets(self, sets: list[NewSet]) -> None:
        """Given complete sets claimed from the outbox, record them all as queued in one transaction."""
        ...

    def add_failed(self, go_name: str, env: str, parts: list[str], reason: str) -> None:
        """Given a set refused before it was queued and why, record it as failed (unless its name is known in
        another state); a set refused again gets the new reason."""
        ...

    def transition(
        self,
        go_name: str,
        new: State,
        detail: str | None = None,
        archived: bool = False,
        *,
        ticket: str | None = None,
        reason: str | None = None,
        data: DataChange = ...,
    ) -> None:
        """Given a set, a new state and a typed change of its data (DataChange: the SetData fields to set, checked
        by mypy), check the change against the state machine and record it; raise IllegalTransition if it is not
        allowed."""
        ...

    def transition_many(self, changes: list[Change]) -> None:
        """Given typed changes of several sets, record them all in one transaction or none (an illegal one
        raises and rolls the others back); a change whose ``only_from`` no longer holds is skipped."""
        ...

    def update_data(self, go_name: str, change: DataChange) -> None:
        """Given a set and a typed change of its data, set the SetData fields it sets without changing its state
        (moves the change counter)."""
        ...

    def mark_archived(self, archived: dict[str, str]) -> None:
        """Given sent sets and the sent/ folder each one's files now sit in, record that in one transaction."""
        ...

    def get_set(self, go_name: str) -> SetRow | None:
        """Given a GO name, return its set, or None if the journal never heard of it."""
        ...

    def sets_with_sequence(self, sender: str, date: str, seq: str, env: str) -> list[SetRow]:
        """Given a sender, date, sequence and environment, return the sets (any application code, any part
        count, not failed) that use it: the transfer point refuses a second use (ACRF-133)."""
        ...

    def sets_with_sequences(self, sequences: list[SequenceKey]) -> dict[SequenceKey, list[SetRow]]:
        """Given (sender, date, sequence, environment) tuples, return for each the sets that use it as
        ``sets_with_sequence`` does, in one read (a scan's sets checked together)."""
        ...

    def sets_in(self, *states: State, limit: int | None = None, changed_after: int | None = None) -> list[SetRow]:
        """Given states (and at most how many), return the sets in them, oldest first; with ``changed_after`` (a
        value of the change counter), only those written after it, in the order of their change (a queue refilled
        a page at a time, without reading again the sets it holds)."""
        ...

    def sets_by_names(self, go_names: list[str]) -> dict[str, SetRow]:
        """Given GO names, return the sets the journal knows among them by name, in one read (a batch of sets
        taken for upload)."""
        ...

    def recent_sets(self, limit: int = 50, light: bool = False) -> list[SetRow]:
        """Given a count, return the sets written last, newest first; ``light``: a backend may trim each to its
        last notification, without workers or anomalies (what a table shows)."""
        ...

    def sets_changed_after(
        self, change: int, limit: int | None = None, without_data: frozenset[State] = frozenset()
    ) -> list[SetRow]:
        """Given a value of the change counter (a monotonically increasing number set in the same transaction as
        each write to a set), return the sets written after it, oldest change first; at most ``limit`` of them
        when given; the sets in a state of ``without_data`` with an empty SetData (their data not parsed)."""
        ...

    def sets_updated_until(self, until: float, after: tuple[float, str], limit: int) -> list[SetRow]:
        """Given a time, a position (updated_at, GO name) and a page size, return up to ``limit`` sets last
        written at or before ``until`` and past that position, in that order: retention walks a year of history
        a page at a time, from where its last run stopped."""
        ...

    def last_change(self) -> int:
        """Return the change counter's value now (0 for an empty journal)."""
        ...

    def set_by_ticket(self, ticket: str) -> SetRow | None:
        """Given an ONSS ticket of any family (the ACRF's, a notification's file ticket, the declaration's own
        HandledReference), return its set, or None."""
        ...

    def add_keys(self, go_name: str, keys: Iterable[tuple[str, str]]) -> None:
        """Given a set and (kind, value) keys it is known by (``ticket``, ``original_form``: Identification|date|
        hour of a Form of its FI, ``sender_ref``: the sender's own reference), record those it lacked."""
        ...

    def keys_of(self, go_name: str) -> list[tuple[str, str]]:
        """Given a set, return its (kind, value) keys in the order they were recorded."""
        ...

    def keys_of_sets(self, go_names: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Given sets, return each one's (kind, value) keys as ``keys_of`` does, in one read (a page of results)."""
        ...

    def sets_by_key(self, kind: str, value: str) -> list[SetRow]:
        """Given a key, return every set known by it (a sender's reference may name several)."""
        ...

    def add_workers(self, go_name: str, file: str, workers: Iterable[tuple[str, str]]) -> None:
        """Index the (INSS, outcome) of every Form of a notification (file) linked to a set: every worker, not
        only those its record keeps in detail."""
        ...

    def sets_by_worker(self, inss: str, limit: int = 200) -> list[tuple[SetRow, str]]:
        """The sets whose notifications name this worker (INSS), each with the worker's outcome, newest first."""
        ...

    def daily_outcomes(self, days: int, now: float) -> list[tuple[str, str, int]]:
        """(UTC day, outcome, sets created that day) over the last ``days`` days, for the status page's chart."""
        ...

    def sets_with_outcome(self, outcomes: Iterable[str], limit: int = 100) -> list[SetRow]:
        """The sets with one of these outcomes (refused, partly_refused …), newest first."""
        ...

    def sets_named_like(self, fragment: str, limit: int = 100) -> list[SetRow]:
        """The sets whose GO name holds this fragment, newest first."""
        ...

    def waiting_since_before(
        self,
        acrf_before: float,
        notification_before: float,
        limit: int = 100,
        never_late: Sequence[tuple[str, str]] = (),
        after: Sequence[tuple[float, str]] = ((-1.0, ""), (-1.0, "")),
    ) -> list[SetRow]:
        """The sets sent and unchanged since before ``acrf_before``, and acknowledged and unchanged since before
        ``notification_before`` (except those whose GO name is GO.<app>.… with env <env> for a pair of
        ``never_late``: circuit tests, left out before the limit), oldest first (the candidates to be overdue),
        each state's past its place in ``after`` ((updated_at, GO name) of the sent, of the acknowledged)."""
        ...

    def waiting_counts(
        self, acrf_before: float, notification_before: float, never_late: Sequence[tuple[str, str]] = ()
    ) -> tuple[int, int]:
        """How many sets ``waiting_since_before`` would give without a limit: (sent, acknowledged), counted."""
        ...

    def add_note(self, go_name: str, detail: str) -> None:
        """Given a set and a line, add it to the set's history in its current state (an answer that changes no
        state); a set unknown is left alone."""
        ...

    def unarchived_done(self) -> list[SetRow]:
        """Return the sets whose GO went out but whose local files are not yet in sent/."""
        ...

    def counts(self) -> dict[str, int]:
        """Return how many sets are in each state."""
        ...

    def outcome_counts(self) -> dict[str, int]:
        """Return how many sets have each outcome (onss_relay/outcome.py): accepted, refused, pending …"""
        ...

    def history(self, go_name: str) -> list[tuple[float, str, str | None]]:
        """Given a set, return its history as (when, state, detail), oldest first."""
        ...

    def histories(self, go_names: list[str]) -> dict[str, list[tuple[float, str, str | None]]]:
        """Given sets, return each one's history as ``history`` does, in one read (a page of results)."""
        ...

    # responses
    def add_responses(self, folder: str, files: list[tuple[str, int, str]]) -> None:
        """Given responses of a remote folder as (name, size, local path), durably copied, record them in one
        transaction (before any remote delete); one recorded before is replaced."""
        ...

    def mark_responses_deleted(self, folder: str, names: list[str]) -> None:
        """Given responses of a remote folder, record that they were deleted there."""
        ...

    def link_response(
        self, folder: str, name: str, kind: str, linked_set: str | None, detail: str | None = None
    ) -> None:
        """Given a response, record its kind, the set it answers (or None) and, for a malformed one, why."""
        ...

    def get_response(self, folder: str, name: str) -> ResponseRow | None:
        """Given a remote folder and a response name, return its row, or None."""
        ...

    def waiting_page(self, after: int, limit: int, before: int | None = None) -> list[tuple[int, ResponseRow]]:
        """Given a position (0: from the start), a page size and optionally a position to stop before, return
        up to ``limit`` responses waiting for their set past ``after`` and before ``before``, with positions."""
        ...

    def unlinked_responses(self) -> list[ResponseRow]:
        """Return the responses to link: never read, or waiting for their set (a notification before its ACRF)."""
        ...

    def unmatched_responses(self, limit: int | None = None, malformed: bool | None = None) -> list[ResponseRow]:
        """Given a limit (None: all) and which (malformed True, False: the others, None: both), return the newest
        answers kept without a set (other applications, other tools' sets, malformed ones), oldest first."""
        ...

    def unmatched_counts(self) -> dict[str, int]:
        """Return how many answers are kept without a set, by kind, counted by the database."""
        ...

    def unlinked_page(self, after: int, limit: int) -> list[tuple[int, ResponseRow]]:
        """Given a position (0: from the start) and a page size, return up to ``limit`` responses never read yet
        past that position, in the order they were recorded, each with its position: linking any number of them
        a page at a time."""
        ...

    def responses_linked_to(self, go_name: str) -> list[ResponseRow]:
        """Given a set, return the responses linked to it (what retention removes from the inbox with it)."""
        ...

    def unmatched_until(
        self, until: float, after: tuple[float, str, str], limit: int
    ) -> list[tuple[float, ResponseRow]]:
        """Given a time, a position (recorded at, folder, name) and a page size, return up to ``limit`` answers
        linked to no set recorded at or before ``until`` (and before any answer not read yet) past that position,
        in that order, each with when it was recorded: what retention removes from the inbox after inbox_days."""
        ...

    def mark_pruned(self, folder: str, name: str) -> bool:
        """Given an answer linked to no set whose file retention removes, record it on its row (kept; a waiting
        one is not read again) unless it was linked meanwhile; return whether it was still linked to none."""
        ...

    # sequence numbers
    def allocate_sequence(self, sender: str, date: str, env: str, taken: set[int] = ...) -> int:
        """Given a sender, date, environment and sequences known taken elsewhere (sent/), reserve and return the
        number after the highest used (past 99,999 the lowest free; none: NoSequenceLeft), atomically against
        every other writer."""
        ...


def open_journal(cfg: Config, readonly: bool = False, epoch: int | None = None) -> Journal:
    """Given the configuration, open the journal it names and return it: SQLite in the spool when
    ``journal.url`` is empty (refused on a network filesystem), else PostgreSQL. ``readonly`` for readers that
    must never write (`status` run by a user who can only read the spool); ``epoch``: the leadership epoch
    every write must still hold (PostgreSQL; a write after a newer leader took over raises Fenced)."""
    if cfg.journal.url:
        from onss_relay.journal.postgres import PostgresJournal

        return PostgresJournal(cfg.journal, cfg.sender.number, readonly=readonly, epoch=epoch)
    if why := sqlite_place_problem(cfg.paths.journal_path):
        raise JournalError(why)
    return open_journal_at(cfg.paths.journal_path, readonly)


# filesystems shared between machines, where SQLite's WAL (shared memory on one host) and its locks do not hold;
# overlay, fuse and virtiofs are not listed: a container's or a VM's own disk
# network and cluster filesystems (a FUSE one is named fuse.<kind>): a SQLite WAL needs one host's shared memory
SHARED_FILESYSTEMS = (
    "nfs", "cifs", "smb", "afs", "ceph", "glusterfs", "sshfs", "lustre", "gpfs", "beegfs", "9p", "davfs",
    "ocfs2", "gfs2", "virtiofs", "vboxsf", "moosefs", "mfs", "juicefs", "s3fs", "rclone",
)  # fmt: skip


def sqlite_place_problem(path: Path, mounts: str | None = None) -> str | None:
    """Given where a SQLite journal would be (and /proc/mounts' text, for tests), return the sentence refusing
    a network filesystem, or None for a local one."""
    from onss_relay.stages.watch import filesystem_type

    kind = filesystem_type(path.parent, mounts)
    if not kind.removeprefix("fuse.").startswith(SHARED_FILESYSTEMS):
        return None
    return (
        f"{path}: the SQLite journal cannot live on a network filesystem ({kind}): its WAL and locks hold on one"
        " host only; keep paths.root local, or for two machines set journal.url to a PostgreSQL database"
    )


def journal_exists(cfg: Config) -> bool:
    """Given the configuration, return whether its journal holds anything yet: a SQLite file created, a
    PostgreSQL database with the journal's tables (asked; JournalUnreachable when it cannot be reached)."""
    if not cfg.journal.url:
        return cfg.paths.journal_path.exists()
    from onss_relay.journal.postgres_db import connect
    from onss_relay.journal.postgres_schema import has_journal

    conn = connect(cfg.journal)
    try:
        return has_journal(conn)
    finally:
        conn.close()


def journal_location(cfg: Config) -> str:
    """Given the configuration, return where its journal is, for messages (a URL never carries a password)."""
    return cfg.journal.url or str(cfg.paths.journal_path)


def open_journal_at(path: Path, readonly: bool = False) -> Journal:
    """Given a SQLite journal path, open it (tests and tools that have a path, not a configuration);
    ``readonly`` for readers that must never write."""
    from onss_relay.journal.sqlite import SqliteJournal

    return SqliteJournal(path, readonly)
