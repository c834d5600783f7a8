"""What both SQL backends share below the journal's rules: the connection they are driven through (``Db``, in
SQLite's ``?`` dialect), the change counter's next value, and rows read back as SetRow and ResponseRow."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from onss_relay.journal.model import ResponseRow, SetData, SetRow, State

T = TypeVar("T")

NEXT_CHANGE = "(SELECT COALESCE(MAX(change_seq), 0) + 1 FROM sets)"  # the change counter's next value
READ_BATCH = 500  # names in one IN (...) of a batched read (SQLite allows 32,766 parameters, PostgreSQL 65,535)


def batches(names: list[str]) -> list[list[str]]:
    """Given names, return them in lists of at most READ_BATCH (one IN (...) each)."""
    return [names[i : i + READ_BATCH] for i in range(0, len(names), READ_BATCH)]


def marks(names: list[str]) -> str:
    """Given names, return the placeholders of an IN (...) of them."""
    return ",".join("?" * len(names))


class Row(Protocol):
    """A row read back: its columns by name or by position, and their names."""

    def __getitem__(self, key: str | int, /) -> Any: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """What a statement returns: its rows, and how many rows it changed."""

    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """A connection taking SQLite's dialect (``?`` parameters, ``INSERT OR IGNORE``): sqlite3's own, or the
    PostgreSQL backend's translator (postgres_db.py)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...
    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


def column(r: Row, name: str, default: T) -> T:
    """Given a row, return its column ``name``, or ``default`` when the journal predates that column (a
    read-only reader cannot add it). ``in`` on a sqlite3.Row looks at values, not names: hence keys()."""
    names = r.keys()
    return r[name] if name in names else default


NO_DATA = SetData()  # the data of a row read bare (frozen: one for all; building it took ~7 us)


def set_row(r: Row, bare: bool = False) -> SetRow:
    """Given a row of the sets table (and whether its data is left unread: an empty SetData), return it as a
    SetRow."""
    return SetRow(
        go_name=r["go_name"],
        env=r["env"],
        state=State(r["state"]),
        parts=json.loads(r["parts"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        reason=r["reason"],
        ticket=r["ticket"],
        data=NO_DATA if bare else SetData.from_json(r["data"]),
        archived=bool(r["archived"]),
        change=column(r, "change_seq", 0),
    )


def response_row(r: Row) -> ResponseRow:
    """Given a row of the responses table, return it as a ResponseRow."""
    return ResponseRow(
        folder=r["folder"],
        name=r["name"],
        size=r["size"],
        local_path=r["local_path"],
        deleted_remote=bool(r["deleted_remote"]),
        kind=r["kind"],
        linked_set=r["linked_set"],
        detail=column(r, "detail", None),
    )
