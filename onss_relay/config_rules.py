"""What the ONSS documents require of the settings, beyond their types: the technical user's name, the FTP
channel's host, and keys renamed since (still read, with a warning naming the new key).

Plain functions over the parsed TOML tables and values; ``config.py`` applies them and names the file.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

from onss_relay.errors import ConfigError

log = structlog.get_logger(__name__)

# old key -> the key that replaced it: still read (sysadmins have configs), with a warning naming the new one
RENAMED = {("signing", "sign_simulation"): "sign_in_s"}

SFTP_HOST, SFTP_PORT = "sftp.socialsecurity.be", 8022
FTP_PORT = 21
ONSS_DOMAIN = "socialsecurity.be"
FTP_WITHDRAWN = (
    "the ONSS keeps FTP (technical user and password, through the social security extranet) only while the"
    " channel is still supported, and may withdraw it: move to sftp (recommended: cheaper and safer)"
)
# "Spécifications nom d'utilisateur" (seed 003): letters a-z and digits 0-9 only, 8 to 20 positions, no space
TECHNICAL_USER = re.compile(r"[a-z0-9]{8,20}")
TECHNICAL_USER_RULE = "a technical user is 8 to 20 characters, a-z and 0-9 only (social security portal)"


def renamed_keys(
    section: str, table: dict[str, Any], path: Path, from_env: Mapping[tuple[str, str], str]
) -> dict[str, Any]:
    """Given a section's table (and which keys environment variables set), return it with every renamed key
    under its new name; warn once per old key, and refuse a table that gives both names, naming where each
    comes from (the file or the variable)."""
    table = dict(table)

    def origin(key: str) -> str:
        var = from_env.get((section, key))
        return f"environment variable {var}" if var else str(path)

    for (where, old), new in RENAMED.items():
        if where != section or old not in table:
            continue
        if new in table:
            raise ConfigError(
                f"{origin(old)} sets {section}.{old} and {origin(new)} sets {section}.{new}: the same setting under"
                f" its old and new name; keep only {section}.{new}"
            )
        log.warning(
            "config_key_deprecated",
            file=origin(old),
            key=f"{section}.{old}",
            use=f"{section}.{new}",
            detail=f"{origin(old)}: {section}.{old} is deprecated; write {section}.{new} instead (same meaning)",
        )
        table[new] = table.pop(old)
    return table


def unsigned_s_problem(sign_in_s: bool, environments: list[str]) -> str | None:
    """Given signing.sign_in_s and watch.environments, return why sets for S will be refused (the documents ask
    for an FS in every environment; ACRF-122 without one), or None when S is signed or never sent to."""
    if sign_in_s or "S" not in environments:
        return None
    return (
        "signing.sign_in_s = false (or the old signing.sign_simulation = false, which `init` used to write):"
        " sets for S (INTEST-S) go without their FS, and the ONSS documents ask for one in every environment"
        " (refused ACRF-122); remove the key, unless your transfer point refuses an FS there"
    )


def transport_defaults(remote: dict[str, Any], path: Path) -> dict[str, Any]:
    """Given the [remote] table as written, return it completed for its transport: FTP and FTPS need their
    own host (the default host and port, sftp.socialsecurity.be:8022, are the SFTP channel's), refuse the SFTP
    port 8022 (left in a config `init` wrote) and default to port 21."""
    if remote.get("transport") not in ("ftp", "ftps"):
        return remote
    host = remote.get("host")
    if not host or _host_name(host) == SFTP_HOST:
        raise ConfigError(
            f"{path}: remote.host: is required when remote.transport = {remote['transport']!r}: the FTP server of"
            f" the social security extranet, as the ONSS gave it to you ({SFTP_HOST}:{SFTP_PORT} is the SFTP"
            f" channel's); note that {FTP_WITHDRAWN}"
        )
    if remote.get("port") == SFTP_PORT:  # `init` writes port = 8022: left there, FTP would knock on SFTP's port
        raise ConfigError(
            f"{path}: remote.port: {SFTP_PORT} is the SFTP channel's port, and remote.transport ="
            f" {remote['transport']!r} uses FTP's, 21: remove remote.port (21 is the default) or set the port"
            " the ONSS gave for its FTP server"
        )
    return {"port": FTP_PORT} | remote


def _host_name(host: object) -> str:
    """Given remote.host as written, return it as DNS compares names: in lower case, without the root's final dot
    ("SFTP.SocialSecurity.be." is sftp.socialsecurity.be)."""
    return str(host).strip().lower().removesuffix(".")


def technical_user_problem(username: str, host: str) -> str | None:
    """Given remote.username and remote.host, return why the name breaks the portal's rule for technical
    users, or None. The rule is the ONSS's: a relay pointed at another server (a test server, a gateway of a
    private network) is not held to it."""
    name = _host_name(host)
    if not username or not (name == ONSS_DOMAIN or name.endswith("." + ONSS_DOMAIN)):
        return None
    if TECHNICAL_USER.fullmatch(username):
        return None
    return (
        f"{username!r} is not a technical user name: {TECHNICAL_USER_RULE}; if the portal really shows this name"
        " for your technical user (an account older than the rule), set remote.check_username = false"
    )


def journal_url_problem(url: str) -> str | None:
    """Given journal.url, return why it is not usable (None when empty, for SQLite, or a PostgreSQL URL without a
    password in it: the password comes from journal.password_file and never appears in a URL that is logged)."""
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        # never quote the value: a keyword connection string ("host=… password=…") may hold the password
        said = f"the scheme {parts.scheme!r}" if "://" in url and parts.scheme.isalnum() else "a connection string"
        return f"{said} is not known: give postgresql://user@host:port/database (empty = SQLite)"
    # libpq decodes the query's names too: ?pass%77ord=… is a password (and sslpassword the client key's)
    names = [name.lower() for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    if parts.password is not None or "password=" in parts.query or any("password" in n for n in names):
        return "holds a password: put it in journal.password_file, never in the URL (URLs are logged)"
    if not parts.path.strip("/"):
        return "names no database: postgresql://user@host:port/database"
    return None


HOOK_PATH = "/usr/local/bin:/usr/bin:/bin"  # the only PATH the on_result hook runs with (hooks.py)


def hook_problems(on_result: str, timeout: float, results_dir: Path) -> Iterator[tuple[str, str]]:
    """Given [hooks] on_result and timeout and the results folder (the hook's working folder), yield (key, why)
    for each thing that keeps the hook from running: a blank command, unbalanced quotes, a program that is not
    there or not executable (looked up on HOOK_PATH as the hook's own run would), a timeout under 1 s."""
    if timeout < 1:
        yield "hooks.timeout", f"{timeout:g} s is too short: give the hook at least 1 s"
    if not on_result:
        return  # no hook
    if not on_result.strip():
        yield "hooks.on_result", 'is blank: give a command, or "" (the default) for no hook'
        return
    try:
        program = shlex.split(on_result)[0]
    except ValueError:
        yield "hooks.on_result", f"{on_result!r} is not a command line (unbalanced quotes)"
        return
    if "/" not in program:
        if shutil.which(program, path=HOOK_PATH) is None:
            yield "hooks.on_result", f"{program!r} is not an executable program in the hook's PATH ({HOOK_PATH})"
        return
    path = results_dir / program  # a relative path is from the results folder, where the hook runs
    if not path.is_file():
        yield "hooks.on_result", f"{str(path)!r} does not exist (or is not a file)"
    elif not os.access(path, os.X_OK):
        yield "hooks.on_result", f"{str(path)!r} is not executable (chmod +x it)"
