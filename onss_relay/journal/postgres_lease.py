"""Leadership in the PostgreSQL journal: one active relay per sender number, on its own connection.

The ``leadership`` row names the active relay, its epoch and when its lease ends (the database's clock). The
active relay renews it every quarter lease; a standby takes it once it has ended, raising the epoch under the
writers' lock, so that every journal write of the old leader is refused from then on (postgres.py fences).
The old leader counts its lease on its own monotonic clock from *before* each renewal was sent and gives up at
two thirds of it: a relay paused (SIGSTOP, a frozen VM) finds, when it runs again, that its lease lapsed, and
sends no GO (``check()`` runs right before each one). A leader paused inside a statement is not idle for the
server (its backend waits for the rest of the statement, or to send a large result) and would hold the
writers' lock for ever: once the lease has ended by the database's clock, the standby ends that leader's
sessions (their application_name carries the epoch, postgres_db.session_name) and takes over.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any

import structlog

from onss_relay.config import JournalConfig
from onss_relay.errors import ConfigError, Fenced, JournalBusy, JournalUnreachable, RelayError
from onss_relay.journal.postgres_db import PgDb, connect, neutral_errors, safe_url, session_name
from onss_relay.journal.postgres_schema import WRITER_LOCK, migrate, own_sender, schema_version

log = structlog.get_logger(__name__)

TRUSTED_PART = 2 / 3  # of the lease, counted from before the renewal was sent: the leader's own deadline
RENEWALS_PER_LEASE = 4

TAKE = """
INSERT INTO leadership (sender, epoch, holder, since, expires_at)
VALUES (?, ?, ?, now(), now() + make_interval(secs => ?))
ON CONFLICT (sender) DO UPDATE SET epoch = EXCLUDED.epoch, holder = EXCLUDED.holder, since = EXCLUDED.since,
    expires_at = EXCLUDED.expires_at
"""
LEADER = "SELECT epoch, holder, expires_at > now() AS live FROM leadership WHERE sender = ?"
END_LAPSED = (  # a lapsed leader's sessions inside a statement or transaction (idle ones hold no lock): never
    # this session, never while that lease is live, by the database's clock
    "SELECT pid, pg_terminate_backend(pid) AS ended FROM pg_stat_activity WHERE application_name = ?"
    " AND state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid() AND EXISTS (SELECT 1 FROM leadership"
    " WHERE sender = ? AND epoch = ? AND holder = ? AND holder <> ? AND expires_at <= now())"
)
WRITERS_LOCK_HOLDERS = (  # what a blocked standby names in its log: the sessions holding the writers' lock
    "SELECT a.pid, a.application_name, a.state, a.wait_event FROM pg_locks l JOIN pg_stat_activity a"
    " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = ?"
    " AND l.objid::bigint = ? AND l.objsubid = 1 ORDER BY a.pid"
)
RENEW = (  # never a lease that ended: a standby may be taking it over (a relay paused past it steps down)
    "UPDATE leadership SET expires_at = now() + make_interval(secs => ?)"
    " WHERE sender = ? AND epoch = ? AND holder = ? AND expires_at > now()"
)


class PostgresLease:
    """Given the journal settings and the sender number, take, renew and give back the leadership of that
    sender's relays (the RelayLock of two machines, leadership.py)."""

    def __init__(self, cfg: JournalConfig, sender: str) -> None:
        self.cfg = cfg
        self.sender = sender
        self.me = f"{socket.gethostname()} pid {os.getpid()}"
        self.where = safe_url(cfg.url)
        self._conn: Any = None
        self._io = threading.Lock()  # the connection: the renewing thread and the caller's thread
        self._epoch: int | None = None
        self._taken: int | None = None  # the epoch this relay last took: its own lease, whatever its name's twin
        self._valid_until = 0.0  # time.monotonic() past which the lease is no longer trusted
        self._lost: str | None = None
        self._holder = "?"
        self._leader_epoch: int | None = None  # the active relay's epoch as last read by this standby
        self._lapsed: tuple[int, str] | None = None  # (epoch, holder) of another relay's lease read as ended
        self._blocked_by: str | None = None  # the writers' lock holders a standby's take waits for, while it does
        self._ended: set[tuple[int, int]] = set()  # (epoch, pid) of the lapsed sessions ended (each logged once)
        self.unreachable: str | None = None  # why the database cannot be reached, while it cannot
        self._since: float | None = None
        self.standby_since: float | None = None
        self._stop = threading.Event()
        self._renewing: threading.Thread | None = None

    @property
    def epoch(self) -> int | None:
        """The epoch of the leadership held now, None while standby."""
        return self._epoch

    def _db(self) -> PgDb:
        """Return this lease's own connection, opened again when it broke (and the schema made, once)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            quarter = max(1.0, self.cfg.lease / RENEWALS_PER_LEASE)
            # a lock wait ends within a quarter lease: a standby blocked by a paused leader's open transaction
            # (idle: the server ends it after one lease; inside a statement: _blocked() ends it) tries again,
            # and pings the watchdog meanwhile
            self._conn = connect(self.cfg, keepalive_s=quarter, lock_wait_s=quarter)
            db = PgDb(self._conn)
            try:
                with self._conn.transaction():
                    migrate(db, self.where)
                    own_sender(db, self.sender, self.where)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._conn.close()  # the next try opens and checks again
                self._conn = None
                raise
        return PgDb(self._conn)

    def try_acquire(self) -> bool:
        """Take the leadership if nobody holds a live lease (or this process held it); return whether it holds
        it now. An unreachable database is a standby's wait, said in holder() and logged once; the writers' lock
        still held by a leader whose lease ended is got past (_blocked()), by anything else waited for. Raise
        ConfigError for a setting to fix (no psycopg, unreadable password file, refused login)."""
        started = time.monotonic()
        try:
            with self._io, neutral_errors(self.where):
                epoch = self._take()
        except ConfigError:
            raise
        except JournalUnreachable as e:
            self._unreachable(str(e))
            return False
        except JournalBusy as e:  # the writers' lock held past a quarter lease; the next try waits again
            self._blocked(str(e))
            return False
        self._unblocked()
        if self.unreachable is not None:
            log.info("journal_database_reachable", journal=self.where)
        self.unreachable = None
        if epoch is None:
            self.standby_since = self.standby_since or time.time()
            return False
        self._epoch, self._lost, self._since, self.standby_since = epoch, None, time.time(), None
        self._leader_epoch = None
        self._valid_until = started + self.cfg.lease * TRUSTED_PART
        self._holder = self.me
        self._stop.clear()
        self._renewing = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._renewing.start()
        log.info("leadership_taken", epoch=epoch, holder=self.me, journal=self.where)
        return True

    def _unreachable(self, why: str) -> None:
        """Given why the database cannot be reached, wait for it as a standby: said once in the log, and no
        other relay's epoch shown as if it were current."""
        if self.unreachable is None:
            log.warning("journal_database_unreachable", journal=self.where, error=why)
        self._holder, self.unreachable, self._leader_epoch = f"unknown ({why})", why, None
        self.standby_since = self.standby_since or time.time()

    def _take(self) -> int | None:
        """Given the connection lock, take the leadership row under the writers' lock; return the new epoch,
        or None when another relay's lease is live (read first without the lock: a standby's tries do not queue
        behind a live leader's writes)."""
        db = self._db()
        if self._live_elsewhere(db.execute(LEADER, (self.sender,)).fetchone()):
            return None
        with self._conn.transaction():
            db.execute("SELECT pg_advisory_xact_lock(?)", (WRITER_LOCK,))
            row = db.execute(f"{LEADER} FOR UPDATE", (self.sender,)).fetchone()
            if self._live_elsewhere(row):
                return None
            epoch = (int(row["epoch"]) if row is not None else 0) + 1
            db.execute(TAKE, (self.sender, epoch, self.me, float(self.cfg.lease)))
        self._taken = epoch
        return epoch

    def _live_elsewhere(self, row: Any) -> bool:
        """Given the leadership row read, return whether another relay's lease is live; note that relay (the
        active one, or the lapsed one whose sessions a blocked take may end)."""
        self._lapsed = None
        # a live lease is taken back only by the relay that took it (after a lost connection): its name is not
        # enough, two containers' relays are both pid 1 and may share the host's name
        if row is None or (row["holder"] == self.me and int(row["epoch"]) == self._taken):
            return False
        if not row["live"]:
            self._lapsed = (int(row["epoch"]), str(row["holder"]))
            return False
        self._holder, self._leader_epoch = str(row["holder"]), int(row["epoch"])
        return True

    def _blocked(self, why: str) -> None:
        """Given why a take waited past its bound for a lock, end the sessions of the relay whose lease ended
        (paused inside a write: its backend may hold the writers' lock for ever) so that the next try takes
        over, logged once with their pids; else say once that this standby is blocked, and by whom."""
        self.standby_since = self.standby_since or time.time()
        ended: list[int] = []
        if (lapsed := self._lapsed) is not None:
            try:
                ended = self._end_sessions_of(*lapsed)
            except RelayError as e:  # e.g. a relay logged in as another database user: not allowed to end them
                why = f"{why}; the sessions of {lapsed[1]} (epoch {lapsed[0]}, lease ended) could not be ended: {e}"
        if ended and lapsed is not None:
            log.warning(
                "lapsed_leader_sessions_ended",
                pids=ended,
                epoch=lapsed[0],
                holder=lapsed[1],
                journal=self.where,
                detail="its lease ended while they held the journal's locks; taking over",
            )
        elif self._blocked_by is None:
            self._blocked_by = self._writers_lock_holders()
            log.warning(
                "standby_blocked", holders=self._blocked_by, journal=self.where, detail=f"{why}; trying every second"
            )

    def _end_sessions_of(self, epoch: int, holder: str) -> list[int]:
        """Given the epoch and holder of a lease read as ended, end that epoch's busy journal sessions if the
        lease is still that one and still ended, by the database's clock; return the pids not ended before."""
        with self._io, neutral_errors(self.where):
            rows = self._db().execute(
                END_LAPSED, (session_name(self.sender, epoch), self.sender, epoch, holder, self.me)
            )
            ended = [int(r["pid"]) for r in rows.fetchall() if r["ended"] and (epoch, int(r["pid"])) not in self._ended]
        self._ended.update((epoch, pid) for pid in ended)
        return ended

    def _writers_lock_holders(self) -> str:
        """Return the sessions holding the writers' lock (pid, application name, state, wait event), for the
        log of a blocked standby."""
        with contextlib.suppress(RelayError), self._io, neutral_errors(self.where):
            rows = self._db().execute(WRITERS_LOCK_HOLDERS, (WRITER_LOCK >> 32, WRITER_LOCK & 0xFFFFFFFF)).fetchall()
            return ", ".join(
                f"pid {r['pid']} ({r['application_name'] or '?'}, {r['state'] or '?'}, {r['wait_event'] or '-'})"
                for r in rows
            )
        return "unknown sessions"

    def _unblocked(self) -> None:
        """Say once that a take no longer waits for the writers' lock."""
        if self._blocked_by is not None:
            self._blocked_by = None
            log.info("standby_unblocked", journal=self.where)

    def _renew_loop(self) -> None:
        """Renew the lease every quarter of it until released; a failed renewal loses the leadership."""
        period = self.cfg.lease / RENEWALS_PER_LEASE
        while not self._stop.wait(period):
            started = time.monotonic()
            if self.lost() is not None:  # paused past its trusted part: a standby may hold it now; never renew
                return
            try:
                with self._io, neutral_errors(self.where):
                    renewed = self._db().execute(RENEW, (float(self.cfg.lease), self.sender, self._epoch, self.me))
                    ok = renewed.rowcount == 1
            except RelayError as e:
                self._lose(f"its lease could not be renewed: {e}")
                return
            if not ok:
                self._lose("its lease ended or a newer relay took the leadership over")
                return
            self._valid_until = started + self.cfg.lease * TRUSTED_PART

    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            log.error("leadership_lost", epoch=self._epoch, error=why)

    def lost(self) -> str | None:
        """Return why the leadership held is no longer safe (lapsed lease, broken connection), else None."""
        if self._epoch is None:
            return None
        if self._lost is None and time.monotonic() > self._valid_until:
            self._lose(f"its lease was not renewed in time (paused or cut off for more than {self.cfg.lease:g} s?)")
        return self._lost

    def check(self) -> None:
        """Raise Fenced unless the leadership is held and its lease trusted now (right before a GO)."""
        why = self.lost() if self._epoch is not None else "this relay is not the active one"
        if why is not None:
            raise Fenced(f"{self.where}: no GO sent: {why}")

    def holder(self) -> str:
        """Return the active relay (host and pid) as last read, or why it is unknown."""
        return self._holder

    def release(self) -> None:
        """Stop renewing and end the lease now, so that a standby takes over at once; close the connection."""
        self._stop.set()
        if self._renewing is not None:
            self._renewing.join(timeout=5)
        epoch, self._epoch = self._epoch, None
        with self._io:
            if epoch is not None and self._lost is None:
                with contextlib.suppress(Exception):
                    self._db().execute(
                        "UPDATE leadership SET expires_at = now() WHERE sender = ? AND epoch = ? AND holder = ?",
                        (self.sender, epoch, self.me),
                    )
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def describe(self) -> dict[str, object]:
        """Return what status, check and /metrics show: backend, database, leader, epoch (held), leader_epoch
        (held, or the active relay's as a standby last read it), since, standby_since."""
        return {
            "backend": "postgresql",
            "journal": self.where,
            "leader": self._epoch is not None and self._lost is None,
            "epoch": self._epoch,
            "leader_epoch": self._epoch if self._epoch is not None else self._leader_epoch,
            "holder": self._holder,
            "since": self._since,
            "standby_since": self.standby_since,
        }


def leadership_line(cfg: JournalConfig, sender: str) -> str:
    """Given the journal settings and the sender number, return `check`'s journal line: the database reached,
    its schema version, and the active relay with its epoch (or none); raise JournalUnreachable or ConfigError
    when it cannot be reached."""
    where = safe_url(cfg.url)
    conn = connect(cfg)
    try:
        db = PgDb(conn)
        with neutral_errors(where):
            version = schema_version(db)
            if version == 0:
                return f"postgresql {where}: reachable, no journal yet (the relay creates it)"
            own_sender(db, sender, where, record=False)
            row = db.execute(
                "SELECT epoch, holder, expires_at > now() AS live FROM leadership WHERE sender = ?", (sender,)
            ).fetchone()
    finally:
        conn.close()
    if row is None:
        leader = "no relay has led yet"
    elif row["live"]:
        leader = f"leader {row['holder']}, epoch {row['epoch']}"
    else:
        leader = f"no leader now (last: {row['holder']}, epoch {row['epoch']}, lease ended)"
    return f"postgresql {where}: reachable, schema {version}; {leader}"
