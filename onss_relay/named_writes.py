"""Writes that say which file they were writing when they fail. An OSError from ``write``, ``flush``, ``fsync`` or
``close`` on an open file carries no file name, so a full disk came out as "disk full" naming nothing (issue 29
review); here such an error gets the path of the file being written, and a download's temp file turns its own
errors into a LocalError, never taken by a transport reading into it for the remote side's trouble."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from onss_relay.errors import LocalError, describe_os_error

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class naming:  # noqa: N801 (used as a function: ``with naming(path):``)
    """Given the file (or folder) a block writes, run the block; raise an OSError from it that names no file
    again with that path. A class, not a generator: it wraps several writes of every set signed and sent."""

    __slots__ = ("path",)

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: object) -> None:
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(self.path)) from e


@contextlib.contextmanager
def _local(path: Path, doing: str) -> Iterator[None]:
    """Given a local file and what is done to it, turn an OSError of the block into a LocalError naming it."""
    try:
        with naming(path):
            yield
    except OSError as e:
        raise LocalError(describe_os_error(e, doing)) from e


class LocalFile(io.BufferedWriter):
    """Given a path, a new local file open for writing (truncated) whose write, flush and close errors are
    LocalErrors naming it: a transport copying into it passes them on as this machine's problem (exit 4)."""

    def __init__(self, path: Path, doing: str = "") -> None:
        super().__init__(io.FileIO(path, "wb"))
        self.path = path
        self.doing = doing

    def write(self, data: ReadableBuffer, /) -> int:
        with _local(self.path, self.doing):
            return super().write(data)

    def flush(self) -> None:
        with _local(self.path, self.doing):
            super().flush()

    def close(self) -> None:
        with _local(self.path, self.doing):
            super().close()
