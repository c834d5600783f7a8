"""Many gets and removes in one call: what a transport that can keep them in flight together (SFTP) does at
once, and what any other does one after the other (``get_each``, ``delete_each``).

A file's own trouble (gone, too large, unreadable) is kept on its ``Fetch``; only what stops the connection
(network, timeout) is raised, as ``Transport.get`` and ``Transport.delete`` raise it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from onss_relay.errors import PermanentRemoteError, RemoteError
from onss_relay.transport.base import SizeLimitExceeded

if TYPE_CHECKING:
    from onss_relay.transport.base import Transport


@dataclasses.dataclass
class Fetch:
    """One remote file to copy into ``dest``: afterwards ``size`` holds the bytes copied, or ``error`` why not."""

    name: str
    dest: BinaryIO
    size: int = 0
    error: RemoteError | None = None


FILE_ERRORS = (SizeLimitExceeded, PermanentRemoteError)  # one file's trouble; the others go on


def get_each(t: Transport, folder: str, fetches: Sequence[Fetch], max_size: int) -> None:
    """Given a transport and files of one folder, copy each in turn; record each file's own error on it."""
    for f in fetches:
        try:
            f.size = t.get(folder, f.name, f.dest, max_size)
        except FILE_ERRORS as e:
            f.error = e


def delete_each(t: Transport, folder: str, names: Sequence[str]) -> None:
    """Given a transport and names in one folder, remove each in turn (one already gone is fine)."""
    for name in names:
        t.delete(folder, name)
