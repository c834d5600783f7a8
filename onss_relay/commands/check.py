"""`onss-relay check`: one line per check (✓, ✗ with a hint, or ! a warning); exit 0 all good, 2 configuration
problem, 3 remote problem, 4 the relay cannot work here (a journal it cannot write, a full disk)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TextIO

from onss_relay.commands.certificate import SELF_SIGNED
from onss_relay.commands.check_access import service_user_lines, too_open
from onss_relay.config import Config
from onss_relay.config_rules import FTP_WITHDRAWN, unsigned_s_problem
from onss_relay.disk import disk_full, journal_unwritable
from onss_relay.errors import (
    EXIT_OK,
    EXIT_REMOTE,
    EXIT_USAGE,
    ConfigError,
    JournalError,
    LocalError,
    RelayError,
    RemoteError,
)
from onss_relay.health import daemon_health, daemon_report, reported
from onss_relay.identity import check_certificate, days_left, is_self_signed, load_signing_identity, portal_dn
from onss_relay.journal import sqlite_place_problem
from onss_relay.names import Env, response_folder, upload_folder
from onss_relay.spool import spool_in_use
from onss_relay.transport import open_transport


def run_checks(cfg: Config, out: TextIO, local_only: bool = False) -> int:
    """Given the configuration, run every check (only those of this machine with ``local_only``), print one line
    each and return the exit code."""
    worst = EXIT_OK

    def check(label: str, fn: Callable[[], str], code_on_fail: int = EXIT_USAGE) -> bool:
        nonlocal worst
        try:
            detail = fn()
        except (RelayError, OSError) as e:
            print(f"✗ {label}: {e}", file=out)
            worst = max(worst, e.exit_code if isinstance(e, (RemoteError, ConfigError, LocalError)) else code_on_fail)
            return False
        print(f"✓ {label}" + (f": {detail}" if detail else ""), file=out)
        return True

    check("configuration", lambda: str(cfg.source))
    lines, readable = service_user_lines(cfg)
    errors, warnings = too_open(cfg)
    for line in [*lines, *errors, *warnings]:
        print(line, file=out)
    worst = worst if readable and not errors else EXIT_USAGE
    if check("signing certificate", lambda: _certificate(cfg)):
        _self_signed_warning(cfg, out)
    for warning in setting_warnings(cfg):
        print(f"! {warning}", file=out)
    for label, fn in _local_places(cfg):
        check(label, fn)
    if cfg.remote.transport == "sftp":
        check("SSH key readable", lambda: _ssh_key(cfg))
        check("known_hosts", lambda: _known_hosts(cfg))
    check("journal", lambda: _journal(cfg))
    if local_only:
        print("- remote: not checked (--local); the daemon retries it until it answers", file=out)
        return worst
    check("remote", lambda: _remote(cfg), EXIT_REMOTE)
    if reported(cfg.paths.root):
        check("running daemon", lambda: _daemon(cfg), EXIT_REMOTE)
    return worst


def page_access(cfg: Config) -> str:
    """Given the configuration, return who may read the status page; raise ConfigError naming the setting when
    its secret file cannot be read or is empty (the daemon refuses to start then)."""
    from onss_relay.status_page.auth import guard_for

    guard = guard_for(cfg.metrics)
    if guard.open:
        return f"open to whoever reaches {cfg.metrics.listen} (loopback, no secret configured)"
    ways = [f"HTTP basic, user {guard.user!r}"] * (guard.password is not None) + ["bearer token"] * (
        guard.token is not None
    )
    return " or ".join(ways) + " (/metrics and /healthz stay open)"


def _local_places(cfg: Config) -> list[tuple[str, Callable[[], str]]]:
    """Given the configuration, return the (label, check) of every local place the relay writes: the outbox,
    the inbox, the spool and a SQLite journal (a PostgreSQL one: the journal line says whether it is reached);
    then, with a listener, the status page's secret files."""
    places = (("outbox", cfg.paths.outbox_dir), ("inbox", cfg.paths.inbox_dir), ("spool", cfg.paths.root))
    checks: list[tuple[str, Callable[[], str]]] = [
        (f"{label} writable", functools.partial(_writable, path)) for label, path in places
    ]
    if not cfg.journal.url:
        checks.append(("journal writable", lambda: _journal_writable(cfg)))
    if cfg.metrics.listen:  # its secret files: this machine's too
        checks.append(("status page access", lambda: page_access(cfg)))
    return checks


def _journal(cfg: Config) -> str:
    """The journal's backend, whether it is reachable, and which relay leads (with its epoch on PostgreSQL)."""
    if cfg.journal.url:
        from onss_relay.journal.postgres_lease import leadership_line

        return leadership_line(cfg.journal, cfg.sender.number)
    if why := sqlite_place_problem(cfg.paths.journal_path):
        raise JournalError(why)
    where = cfg.paths.journal_path
    state = "present" if where.exists() else "not created yet"
    leader = "leader: the relay holding the spool lock" if spool_in_use(cfg.paths.root) else "no relay running"
    return f"sqlite {where} ({state}); {leader}"


def _daemon(cfg: Config) -> str:
    """What the running daemon last reported (a stage paused by a permission error shows up here): a local cause
    (its journal, its disk) is a local problem (exit 4), any other a remote one (exit 3)."""
    healthy, why = daemon_health(cfg.paths.root)
    if healthy is not False:
        return why
    report = daemon_report(cfg.paths.root)
    if (report is not None and report[0].get("local")) or disk_full(cfg.paths.root):  # it cannot write on a full disk
        raise LocalError(why)
    raise RemoteError(why)


def _journal_writable(cfg: Config) -> str:
    """Given the configuration, return the journal's path when this user can write it (or it is not made yet);
    raise LocalError saying why not (a read-only mount, a journal restored by `cp` as root)."""
    path = cfg.paths.journal_path
    if why := journal_unwritable(path):
        raise LocalError(why)
    return str(path) if path.exists() else f"{path} (not made yet; its folder is writable)"


def _certificate(cfg: Config) -> str:
    ident = load_signing_identity(cfg)
    left = days_left(ident)
    note = check_certificate(ident, warning_days=cfg.signing.expiry_warning_days)
    subject = portal_dn(ident.certificate.subject)
    return f"{subject}, {left} days left" + (
        " — renew it soon with your certificate authority and register the new .cer on the portal" if note else ""
    )


def _self_signed_warning(cfg: Config, out: TextIO) -> None:
    """Given a configuration whose certificate loads, print a warning line when it is self-signed (not an error:
    the demo and the simulator use one)."""
    if is_self_signed(load_signing_identity(cfg).certificate):
        print(f"! signing certificate is {SELF_SIGNED}", file=out)


def _ssh_key(cfg: Config) -> str:
    from onss_relay.config import read_secret
    from onss_relay.transport.sftp import fingerprint, load_private_key

    assert cfg.remote.private_key is not None  # config validation ensures it for sftp
    key = load_private_key(cfg.remote.private_key, read_secret(cfg.remote.passphrase_file, "remote.passphrase_file"))
    return f"{cfg.remote.private_key} ({key.get_name()}, {fingerprint(key)})"


def _known_hosts(cfg: Config) -> str:
    from onss_relay.transport.sftp import host_entry, load_known_hosts

    assert cfg.remote.known_hosts is not None
    entry = host_entry(cfg.remote.host, cfg.remote.port)
    if known := load_known_hosts(cfg.remote.known_hosts).lookup(entry):
        return f"{entry}: {', '.join(sorted(known.keys()))}"
    raise ConfigError(
        f"remote.known_hosts = {str(cfg.remote.known_hosts)!r}: no key for {entry}; add the transfer point's host"
        " key (ssh-keyscan, then check its fingerprint with the ONSS)"
    )


def _writable(path: os.PathLike[str]) -> str:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(13, "not writable by this user (check ownership and mode)", str(path))
    return str(path)


def _remote(cfg: Config) -> str:
    t = open_transport(cfg)
    try:
        folders = [upload_folder(Env(e)) for e in cfg.watch.environments]
        folders += [response_folder(Env(e)) for e in cfg.poll.environments]
        for folder in folders:
            t.list(folder)
    finally:
        t.close()
    where = cfg.remote.base_dir if cfg.remote.transport == "local" else f"{cfg.remote.host}:{cfg.remote.port}"
    tls = ", TLS certificate verified" if cfg.remote.transport == "ftps" else ""
    return f"{cfg.remote.transport} {where}{tls}, folders {', '.join(folders)} listed"


def setting_warnings(cfg: Config) -> list[str]:
    """Given the configuration, return what its settings risk without being wrong: S sent unsigned, a channel the
    ONSS may withdraw, a quiet period too short to protect against a stalled path."""
    warnings = [w for w in (unsigned_s_problem(cfg.signing.sign_in_s, cfg.watch.environments),) if w]
    if cfg.remote.transport in ("ftp", "ftps"):
        warnings.append(f"remote.transport = {cfg.remote.transport!r}: {FTP_WITHDRAWN}")
    if short := short_quiet_period(cfg):
        warnings.append(short)
    return warnings


SAFE_QUIET_PERIOD = 120.0  # seconds: longer than a congested or flapping path holds a packet (TCP's own limits)


def short_quiet_period(cfg: Config) -> str | None:
    """Given the configuration, return a warning when remote.quiet_period is too short to protect against a
    stalled path (a request it held reaching the server after the relay sent it again), else None."""
    quiet = cfg.remote.quiet_period
    if cfg.remote.transport == "local" or quiet >= SAFE_QUIET_PERIOD:
        return None
    return (
        f"remote.quiet_period = {quiet:g}s is shorter than {SAFE_QUIET_PERIOD:g}s: a stalled path may deliver a "
        "request the relay gave up after the relay has sent it again (a GO twice, an FS after its GO); keep the "
        "default 2m unless this path is known never to hold packets"
    )
