"""The PostgreSQL backend's connection: opened from journal.url and journal.password_file, driven in the
SQLite dialect the journal's rules are written in (``?`` parameters, ``INSERT OR IGNORE``), its errors made
the backend-neutral ones. psycopg 3 is an optional extra: ``pip install 'onss-relay[postgres]'``."""

from __future__ import annotations

import contextlib
import functools
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from onss_relay.config import JournalConfig, read_secret
from onss_relay.errors import ConfigError, JournalBusy, JournalError, JournalUnreachable

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 5
WRITER_WAIT_LEASES = 4  # a journal writer waits this many leases for the writers' lock, then fails in one sentence


def session_settings(lease: float, lock_wait_s: float) -> str:
    """Given the lease and how long a statement may wait for a lock, return libpq's ``options`` for a relay's
    session: a transaction left open one lease (its process paused: SIGSTOP, a frozen VM) is ended by the
    server, which frees the writers' lock for the standby taking over; a lock is waited for ``lock_wait_s``."""
    idle_ms = max(1000, int(lease * 1000))
    return f"-c idle_in_transaction_session_timeout={idle_ms} -c lock_timeout={max(1, int(lock_wait_s * 1000))}"


def session_name(sender: str, epoch: int | None) -> str:
    """Given the sender number and the leadership epoch a relay's journal session writes under (None for
    commands and the lease's own session), return its application_name: a standby taking over a lapsed leader
    finds that leader's sessions by it (at most 63 bytes: PostgreSQL cuts longer names)."""
    return "onss-relay" if epoch is None else f"onss-relay {sender} epoch {epoch}"


def require_psycopg(cfg: JournalConfig) -> None:
    """Given the journal settings with a PostgreSQL url, raise ConfigError (exit 2, one sentence) unless psycopg 3
    is installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"journal.url = {safe_url(cfg.url)!r}: the PostgreSQL journal needs psycopg 3:"
            " pip install 'onss-relay[postgres]'"
        ) from None


def safe_url(url: str) -> str:
    """Given a journal URL, return it for messages and logs: without any password, whatever was written."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{netloc}"))


def connect(
    cfg: JournalConfig, keepalive_s: float = 10.0, lock_wait_s: float | None = None, name: str = "onss-relay"
) -> psycopg.Connection[Any]:
    """Given the journal settings, open and return a new autocommit connection (its own session: the leadership
    lease has one, the journal another) that notices a dead peer within about ``keepalive_s`` (TCP keepalives,
    tcp_user_timeout), whose transactions the server ends after one lease idle, whose lock waits end after
    ``lock_wait_s`` (default: WRITER_WAIT_LEASES leases) and whose application_name is ``name`` (session_name());
    raise ConfigError without psycopg, for an unreadable password file or a refused login, JournalUnreachable
    when the server cannot be reached."""
    require_psycopg(cfg)
    import psycopg

    wait = cfg.lease * WRITER_WAIT_LEASES if lock_wait_s is None else lock_wait_s
    password = read_secret(cfg.password_file, "journal.password_file")
    extra: dict[str, Any] = {
        "application_name": name,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": max(1, int(keepalive_s)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": int(keepalive_s * 1000),
        "options": session_settings(float(cfg.lease), float(wait)),
    }
    if password is not None:
        extra["password"] = password.decode()
    if why := url_file_problem(cfg.url):
        raise ConfigError(f"journal.url = {safe_url(cfg.url)!r}: {why}")
    try:
        conn = psycopg.connect(cfg.url, autocommit=True, row_factory=_row_factory, **extra)
    except psycopg.ProgrammingError as e:  # an option libpq does not know: a setting to fix, never a server to wait for
        raise ConfigError(f"journal.url = {safe_url(cfg.url)!r}: {_first_line(e)}") from e
    except psycopg.OperationalError as e:
        if _first_line(e).startswith(OPTION_REFUSED):  # libpq refused an option's value before any connection
            raise ConfigError(f"journal.url = {safe_url(cfg.url)!r}: {_first_line(e)}") from e
        if getattr(e, "sqlstate", None) in LOGIN_REFUSED or "password" in str(
            e
        ):  # refused or missing: a setting to fix, not a server to wait for
            raise ConfigError(
                f"journal.password_file = {str(cfg.password_file or '')!r}: {safe_url(cfg.url)} refused the"
                f" login: {_first_line(e)}"
            ) from e
        raise JournalUnreachable(f"{safe_url(cfg.url)}: cannot reach the journal database: {_first_line(e)}") from e
    return conn


LOGIN_REFUSED = ("28P01", "28000")  # invalid_password, invalid_authorization_specification: settings to fix
OPTION_REFUSED = "connection is bad: invalid "  # libpq: "invalid sslmode value: …", before reaching any server
URL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile")  # files libpq reads, named in the URL


def url_file_problem(url: str) -> str | None:
    """Given journal.url, return why a file its query names for libpq (sslrootcert, sslcert, sslkey …) cannot be
    read by this user, or None: a missing CA file is a setting to fix, not a database to wait for as a standby."""
    for name, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True):
        if name not in URL_FILES or (name == "sslrootcert" and value == "system"):
            continue
        try:
            with open(value, "rb"):
                pass
        except OSError as e:
            return f"{name} {value}: {e.strerror or e}"
    return None


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class PgRow:
    """A row read back: by column name or position, with the names as keys() (like sqlite3.Row)."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: list[str], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: str | int) -> Any:
        return self._values[key if isinstance(key, int) else self._names.index(key)]

    def keys(self) -> list[str]:
        return self._names


def _row_factory(cursor: Any) -> Any:
    names = [c.name for c in cursor.description] if cursor.description else []
    return lambda values: PgRow(names, values)


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """Given a statement in the journal's SQLite dialect, return it for PostgreSQL: ``?`` becomes ``%s`` (a
    literal ``%`` doubled), ``INSERT OR IGNORE INTO …`` becomes ``INSERT INTO … ON CONFLICT DO NOTHING``."""
    out = sql.replace("%", "%%").replace("?", "%s")
    if re.match(r"\s*INSERT OR IGNORE INTO", out):
        out = out.replace("INSERT OR IGNORE INTO", "INSERT INTO", 1) + " ON CONFLICT DO NOTHING"
    return out


class PgDb:
    """Given a psycopg connection, run the journal's statements on it in the SQLite dialect (the ``Db`` of
    sql_rows.py)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        """Given a statement and its parameters, run it and return its cursor."""
        return self.conn.execute(translate(sql), tuple(parameters) or None)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        """Given a statement and rows of parameters, run it for each row and return the cursor."""
        rows = [tuple(p) for p in parameters]
        cur = self.conn.cursor()
        if rows:
            cur.executemany(translate(sql), rows)
        return cur


@contextlib.contextmanager
def neutral_errors(where: str) -> Iterator[None]:
    """Turn psycopg's errors into the backend-neutral ones the stages handle: a lost or refused connection is
    JournalUnreachable (retried), a lock or serialization conflict JournalBusy, anything else JournalError;
    without psycopg installed, ConfigError."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            f"{where}: the PostgreSQL journal needs psycopg 3: pip install 'onss-relay[postgres]'"
        ) from None

    try:
        yield
    except (psycopg.errors.LockNotAvailable, psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as e:
        raise JournalBusy(f"{where}: the journal is locked by another process ({_first_line(e)})") from e
    except psycopg.errors.DiskFull as e:
        raise JournalError(f"{where}: the journal database's disk is full ({_first_line(e)})") from e
    except (psycopg.OperationalError, psycopg.InterfaceError) as e:
        raise JournalUnreachable(f"{where}: the journal database cannot be reached: {_first_line(e)}") from e
    except psycopg.Error as e:
        raise JournalError(f"{where}: {_first_line(e)}") from e
