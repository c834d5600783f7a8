"""The error hierarchy: each error is a sentence for a human and carries the exit code it maps to.

Retry-or-stop decisions are made on these types, never on library exceptions.
"""

import errno
from typing import Self

EXIT_OK = 0
EXIT_WORK_FAILED = 1
EXIT_USAGE = 2
EXIT_REMOTE = 3
EXIT_LOCAL = 4
EXIT_WAITING = 5  # send --once: sets wait for their quiet period after a stalled connection (uncertain)


class RelayError(Exception):
    """Base of every error onss-relay reports to a person."""

    exit_code = EXIT_WORK_FAILED


class ConfigError(RelayError):
    """A configuration file, key or value is wrong; the message names the file and key."""

    exit_code = EXIT_USAGE


class InvalidName(RelayError, ValueError):
    """A file name does not follow the ONSS grammar; the message names the field and why."""

    def __init__(self, name: str, field: str, why: str, acrf: str | None = None) -> None:
        self.name = name
        self.field = field
        self.why = why
        self.acrf = acrf  # the refusal code the transfer point would answer, when the grammar names one
        super().__init__(f"{name!r}: {field} {why}")


class SignatureError(RelayError):
    """A signature cannot be made or does not verify."""


class CertificateError(SignatureError):
    """The signing certificate is unusable (expired, not yet valid, unreadable)."""

    exit_code = EXIT_USAGE


class BadInput(RelayError):
    """A declaration file cannot be sent as it is; it is quarantined with this reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class RemoteError(RelayError):
    """Something went wrong talking to the transfer point."""

    exit_code = EXIT_REMOTE
    # the server's reply to the request said so (a refusal, a 421): that request is over, nothing of it is
    # still on its way; False when no reply came (a timeout, a connection lost), which leaves it in doubt
    answered = False

    def as_answer(self) -> Self:
        """Mark this error as the server's own reply to the request, and return it."""
        self.answered = True
        return self


class TransientRemoteError(RemoteError):
    """A network hiccup, timeout or server close: retry with backoff."""


class PermanentRemoteError(RemoteError):
    """Authentication refused, host key unknown or changed, permission denied: stop and explain."""


class RemoteFileGone(PermanentRemoteError):
    """A remote file listed a moment ago is gone (the poller took an answer recovery was reading): no such
    file, permanent for that file, and no reason to stop the stage that wanted it."""


class LocalError(RelayError):
    """A problem on this machine, not at the transfer point: a full disk, a permission denied on the spool,
    an I/O error reading a file. The message names the file."""

    exit_code = EXIT_LOCAL


def describe_os_error(e: OSError, doing: str = "") -> str:
    """Given an OSError from local files, return one sentence naming the file and what to do."""
    where = f" ({e.filename})" if e.filename else ""
    what = f"{doing}: " if doing else ""
    if e.errno == errno.ENOSPC:
        return f"{what}disk full{where}: free space on that filesystem; nothing was lost, work resumes once it has room"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"{what}permission denied{where}: the relay's user must be able to read and write the spool"
    if e.errno == errno.EROFS:
        return f"{what}read-only filesystem{where}"
    return f"{what}{e.strerror or e}{where}"


class JournalError(RelayError):
    """The journal cannot be read or written (a full disk, a damaged or newer database): a local problem."""

    exit_code = EXIT_USAGE


class JournalFull(JournalError, LocalError):
    """The disk holding the journal is full: a local problem (exit 4); retry once there is room."""

    exit_code = EXIT_LOCAL


class JournalBusy(JournalError, LocalError):
    """Another process holds the journal's write lock too long: a local problem (exit 4); retry soon."""

    exit_code = EXIT_LOCAL


class JournalUnreachable(JournalBusy):
    """The journal's database server cannot be reached (restarting, network): retry; nothing was written."""


class Fenced(JournalError, LocalError):
    """A newer active relay took over (PostgreSQL leadership): this relay's write was refused; it must stop."""

    exit_code = EXIT_LOCAL


class IllegalTransition(RelayError):
    """The journal was asked for a state change the state machine forbids (a bug, never input)."""


class UsageError(RelayError):
    """A command was given something it cannot use (a missing file, a bad option value)."""

    exit_code = EXIT_USAGE
