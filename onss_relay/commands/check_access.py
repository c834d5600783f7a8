"""What `check` run as root adds: whether the service user could read every file the relay needs (keys,
passwords, certificate, known_hosts, the configuration itself), tried as that user in a forked child."""

from __future__ import annotations

import grp
import os
import pwd
from pathlib import Path

from onss_relay.config import Config
from onss_relay.errors import ConfigError

SERVICE_USER = "onss-relay"  # systemd/onss-relay.sysusers; ONSS_RELAY_SERVICE_USER names another


def needed_files(cfg: Config) -> list[tuple[str, Path]]:
    """Given the configuration, return (setting, path) for every file the daemon reads at start."""
    candidates: list[tuple[str, Path | None]] = [
        ("configuration", cfg.source),
        ("signing.key", cfg.signing.key),
        ("signing.certificate", cfg.signing.certificate),
        ("signing.password_file", cfg.signing.password_file),
        ("remote.private_key", cfg.remote.private_key),
        ("remote.passphrase_file", cfg.remote.passphrase_file),
        ("remote.known_hosts", cfg.remote.known_hosts),
        ("remote.password_file", cfg.remote.password_file),
        ("remote.ca_file", cfg.remote.ca_file),
        ("journal.password_file", cfg.journal.password_file),
        ("metrics.password_file", cfg.metrics.password_file),
        ("metrics.token_file", cfg.metrics.token_file),
    ]
    return [(key, path) for key, path in candidates if path is not None and path.exists()]


def service_user() -> pwd.struct_passwd | None:
    """Given the environment, return the service user's account when this process runs as root and the account
    exists (else None: nothing to compare with)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(os.environ.get("ONSS_RELAY_SERVICE_USER", SERVICE_USER))
    except KeyError:
        return None


def missing_service_user() -> str | None:
    """Given the environment, return a warning when this process runs as root and the service user's account does
    not exist yet (the README's pip block runs before systemd-sysusers makes it), else None."""
    if os.geteuid() != 0 or service_user() is not None:
        return None
    name = os.environ.get("ONSS_RELAY_SERVICE_USER", SERVICE_USER)
    return (
        f"the service user {name} does not exist yet, so who may read the keys was not checked nor set: create it"
        " (systemd-sysusers, the README's systemd block), then run `onss-relay init` and `check` again as root"
    )


def unreadable_by(user: pwd.struct_passwd, files: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Given an account and (setting, path) pairs, return those the account cannot read, found by a forked
    child that takes the account's uid, gid and groups and opens each file."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, try, report the indexes it could not read, exit
        code = 0
        try:
            os.close(r)
            os.setgroups(os.getgrouplist(user.pw_name, user.pw_gid))
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            bad = [str(i) for i, (_, path) in enumerate(files) if not _can_read(path)]
            os.write(w, ",".join(bad).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        return list(files)
    return [files[int(i)] for i in answer.split(",") if i]


def _can_read(path: Path) -> bool:
    """Given a path, return whether this process can open it for reading."""
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def describe(path: Path) -> str:
    """Given a path, return its owner:group and mode as `ls -l` people read them."""
    st = path.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"{owner}:{_group(st.st_gid)} {st.st_mode & 0o7777:04o}"


def _group(gid: int) -> str:
    """Given a group id, return its name (the number when it has none)."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def service_user_lines(cfg: Config) -> tuple[list[str], bool]:
    """Given the configuration, return the lines `check` prints about the service user's access (none when not
    root or no such account) and whether every needed file is readable by it."""
    user = service_user()
    if user is None:
        missing = missing_service_user()
        return ([f"! {missing}"] if missing else []), True
    files = needed_files(cfg)
    bad = unreadable_by(user, files)
    if not bad:
        return [f"✓ files readable by the service user {user.pw_name}: {len(files)}"], True
    return [
        f"✗ {key} = {str(path)!r}: the service user {user.pw_name} cannot read it ({describe(path)}); "
        + (
            f"give it to that user alone (chown {user.pw_name} and chmod 600; `onss-relay init` as root does it)"
            if key in SECRET_KEYS
            else f"give it the service's group (chown root:{_group(user.pw_gid)} and chmod 640)"
        )
        + ", and its folders to that group"
        for key, path in bad
    ], False


SECRET_KEYS = (
    "signing.key",
    "signing.password_file",
    "remote.private_key",
    "remote.passphrase_file",
    "remote.password_file",
    "journal.password_file",
    "metrics.password_file",
    "metrics.token_file",
)


def too_open(cfg: Config) -> tuple[list[str], list[str]]:
    """Given the configuration, return (errors, warnings) about its secret files' modes: readable by others is
    an error (as OpenSSH refuses such a key); readable by the group a warning (whoever may read `status` reads
    them too)."""
    errors, warnings = [], []
    for key, path in needed_files(cfg):
        if key not in SECRET_KEYS:
            continue
        mode = path.stat().st_mode & 0o777
        if mode & 0o007:
            errors.append(
                f"✗ {key} = {str(path)!r}: readable by others ({describe(path)}), as OpenSSH refuses a private"
                f" key; chmod 600 and give it to the service user"
            )
        elif mode & 0o070:
            warnings.append(
                f"! {key} = {str(path)!r}: readable by its group ({describe(path)}); whoever may read status"
                f" through that group reads it too: chmod 600 and give it to the service user (init does as root)"
            )
    return errors, warnings


def refuse_unreadable(cfg: Config) -> None:
    """Given the configuration, raise ConfigError naming the first file the daemon needs and this user cannot
    read (a secret mounted for another uid in a container): one sentence and exit 2, never a daemon that runs
    unhealthy."""
    for key, path in needed_files(cfg):
        if not _can_read(path):
            raise ConfigError(
                f"{key} = {str(path)!r}: this user (uid {os.getuid()}) cannot read it ({describe(path)}); give it"
                " to the user the relay runs as (a container: 10001) with mode 600"
            )
