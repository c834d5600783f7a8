"""The journal: the one store of state, behind one interface, opened by ``open_journal`` whatever the backend.

``model.py`` holds the states, the state machine and the typed per-set data; ``sqlite.py`` the embedded
backend. A new backend (PostgreSQL for an active/standby pair) implements ``Journal`` and runs the journal
contract test (tests/test_journal_contract.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from onss_relay.config import Config
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
    SetData,
    SetRow,
    State,
    Uncertain,
    WorkerResult,
    check_transition,
)

__all__ = [
    "DONE",
    "IN_FLIGHT",
    "TRANSITIONS",
    "WAITING",
    "OTHER_WAITING",
    "WAITING_KINDS",
    "AcrfRecord",
    "AnswerRecord",
    "AnomalyRecord",
    "Change",
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
    "open_journal",
    "open_journal_at",
]


class Journal(Protocol):
    """Every set and response the relay knows, and their states. Safe to share between threads of one process;
    each process opens its own (never across fork()). Writes raise JournalBusy when another process holds
    the journal too long, JournalError on a local failure (a full disk), IllegalTransition on a bug."""

    def close(self) -> None: ...

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        """Every write made inside (by this thread) is one transaction: an answer's link and its effect on its
        set are recorded together or not at all."""
        ...

    # declaration sets
    def add_set(self, go_name: str, env: str, parts: list[str], data: SetData | None = None) -> None: ...
    def add_sets(self, sets: list[NewSet]) -> None: ...
    def add_failed(self, go_name: str, env: str, parts: list[str], reason: str) -> None: ...
    def transition(
        self,
        go_name: str,
        new: State,
        detail: str | None = None,
        archived: bool = False,
        *,
        ticket: str | None = None,
        reason: str | None = None,
        **data: Any,
    ) -> None: ...
    def transition_many(self, changes: list[Change]) -> None: ...
    def update_data(self, go_name: str, **data: Any) -> None: ...
    def mark_archived(self, archived: dict[str, str]) -> None: ...
    def get_set(self, go_name: str) -> SetRow | None: ...

    def sets_with_sequence(self, sender: str, date: str, seq: str, env: str) -> list[SetRow]:
        """The sets (any application code, any part count, not failed) that use this sequence: the transfer
        point refuses a second use of a sender+date+sequence+environment (ACRF-133)."""
        ...

    def sets_in(self, *states: State, limit: int | None = None) -> list[SetRow]: ...
    def recent_sets(self, limit: int = 50, light: bool = False) -> list[SetRow]:
        """The sets written last, newest first; ``light``: with only their last notification, no anomaly."""
        ...

    def sets_changed_after(self, change: int) -> list[SetRow]:
        """The sets written after ``change`` (a value of the journal's change counter, a monotonically
        increasing number set in the same transaction as each write to a set), oldest change first."""
        ...

    def last_change(self) -> int: ...

    def set_by_ticket(self, ticket: str) -> SetRow | None:
        """The set given this ONSS ticket, of any family: the ACRF's, a notification's file ticket, the
        declaration's own (HandledReference)."""
        ...

    def add_keys(self, go_name: str, keys: Iterable[tuple[str, str]]) -> None:
        """Record (kind, value) keys a set is known by: ``ticket``, ``original_form`` (Identification|date|hour
        of a Form of its FI), ``sender_ref`` (the sender's own reference)."""
        ...

    def keys_of(self, go_name: str) -> list[tuple[str, str]]: ...
    def sets_by_key(self, kind: str, value: str) -> list[SetRow]: ...
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
    ) -> list[SetRow]:
        """The sets sent and unchanged since before ``acrf_before``, and acknowledged and unchanged since before
        ``notification_before`` (except those whose GO name is GO.<app>.… with env <env> for a pair of
        ``never_late``: circuit tests, left out before the limit), oldest first (the candidates to be overdue)."""
        ...

    def add_note(self, go_name: str, detail: str) -> None:
        """Add a line to a set's history in its current state (an answer that changes no state)."""
        ...

    def unarchived_done(self) -> list[SetRow]: ...
    def counts(self) -> dict[str, int]: ...
    def outcome_counts(self) -> dict[str, int]:
        """How many sets have each outcome (onss_relay/outcome.py): accepted, refused, pending …"""
        ...

    def history(self, go_name: str) -> list[tuple[float, str, str | None]]: ...

    # responses
    def add_responses(self, folder: str, files: list[tuple[str, int, str]]) -> None: ...
    def mark_responses_deleted(self, folder: str, names: list[str]) -> None: ...
    def link_response(
        self, folder: str, name: str, kind: str, linked_set: str | None, detail: str | None = None
    ) -> None: ...
    def get_response(self, folder: str, name: str) -> ResponseRow | None: ...
    def unlinked_responses(self) -> list[ResponseRow]: ...
    def unmatched_responses(self) -> list[ResponseRow]: ...

    # sequence numbers
    def allocate_sequence(self, sender: str, date: str, env: str, taken: set[int] = ...) -> int: ...


def open_journal(cfg: Config) -> Journal:
    """Given the configuration, open the journal it names (today: SQLite in the spool)."""
    return open_journal_at(cfg.paths.journal_path)


def open_journal_at(path: Path, readonly: bool = False) -> Journal:
    """Given a journal database path, open it (tests and tools that have a path, not a configuration);
    ``readonly`` for readers that must never write (`status` run by a user who can only read the spool)."""
    from onss_relay.journal.sqlite import SqliteJournal

    return SqliteJournal(path, readonly)
