"""The journal's allocation of free sequences (both backends): the next five-digit sequence of a sender, date
and environment, found by two index reads (the reserved ones, the sets the journal knows) rather than a read of
the day; a day whose 99,999 are all used is refused in one sentence. Part of SqlJournal (sql_journal.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from onss_relay.errors import RelayError
from onss_relay.journal.sql_rows import Db
from onss_relay.names import parse_name

MAX_SEQUENCE = 99_999  # five digits: the ONSS accepts letters too, but what we allocate stays digits (ONSS.md)


class NoSequenceLeft(RelayError):
    """Every five-digit sequence of a sender, date and environment is used."""


class SequenceTable:
    """The sequence methods of SqlJournal; its connection, lock and transactions are the backend's."""

    _from_sender: str  # SqlJournal's: a GO name from its sender on, indexed (sets_sequence)

    def _tx(self) -> contextlib.AbstractContextManager[Db]:
        raise NotImplementedError  # the backend's

    def allocate_sequence(self, sender: str, date: str, env: str, taken: set[int] = frozenset()) -> int:  # type: ignore[assignment]
        """Given sender, date, environment and sequences known taken elsewhere (sent/, the outbox), reserve and
        return the sequence after the highest one used (atomic); past 99,999, the lowest one still free, and
        when none is, raise NoSequenceLeft."""
        with self._tx() as db:
            row = db.execute(
                "SELECT MAX(seq) FROM sequences WHERE sender=? AND date=? AND env=?", (sender, date, env)
            ).fetchone()
            top = max(row[0] or 0, self._highest_in_sets(db, sender, date, env), max(taken, default=0))
            seq = top + 1 if top < MAX_SEQUENCE else self._lowest_free(db, sender, date, env, taken)
            db.execute("INSERT INTO sequences (sender, date, env, seq) VALUES (?,?,?,?)", (sender, date, env, seq))
        return seq

    def _highest_in_sets(self, db: Db, sender: str, date: str, env: str) -> int:
        """Given sender, date and environment, return the highest five-digit sequence of the sets the journal
        knows (any application), 0 when none: the day's names walked down the index from the highest, to the
        first of that environment (the other environments' sets of the same numbers sit beside it)."""
        for name in self._day_names(db, sender, date, descending=True):
            with contextlib.suppress(ValueError):
                n = parse_name(name)
                if n.env == env and n.seq.isdigit():
                    return int(n.seq)
        return 0

    def _lowest_free(self, db: Db, sender: str, date: str, env: str, taken: set[int]) -> int:
        """Given a day whose highest sequence is 99,999, return its lowest free one (reading every used one:
        rare, a day of 99,999 declarations or a name dropped by hand with a high number), or raise
        NoSequenceLeft."""
        used = set(taken)
        used.update(
            r[0]
            for r in db.execute("SELECT seq FROM sequences WHERE sender=? AND date=? AND env=?", (sender, date, env))
        )
        for name in self._day_names(db, sender, date, descending=False):
            with contextlib.suppress(ValueError):
                n = parse_name(name)
                if n.env == env and n.seq.isdigit():
                    used.add(int(n.seq))
        free = next((i for i in range(1, MAX_SEQUENCE + 1) if i not in used), None)
        if free is None:
            raise NoSequenceLeft(
                f"no sequence left for {date}: sender {sender} has used all 99,999 sequences of that day in"
                f" environment {env}; submit the rest tomorrow"
            )
        return free

    def _day_names(self, db: Db, sender: str, date: str, descending: bool) -> Iterator[str]:
        """Given sender and date, yield the GO names of the sets of that day whose sequence starts with a digit,
        in the order of the sets_sequence index."""
        start = f"{sender}.{date}."
        order = "DESC" if descending else "ASC"
        rows = db.execute(
            f"SELECT go_name FROM sets WHERE {self._from_sender} >= ? AND {self._from_sender} < ?"
            f" ORDER BY {self._from_sender} {order}",
            (start + "0", start + ":"),  # ":" sorts right after "9"
        )
        for (name,) in rows:
            yield name
