"""An in-memory transport for unit tests of the stages: it records every operation, can fail on cue, and
asks a callback what the journal says at each write (to check the gate order from the outside)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from onss_relay.errors import TransientRemoteError
from onss_relay.transport.base import (
    RemoteEntry,
    SizeLimitExceeded,
    Upload,
    check_folder,
    check_remote_name,
    run_uploads_sequentially,
)
from onss_relay.transport.batch import Fetch, delete_each, get_each


class FakeTransport:
    """Given a shared dict for the remote home, behave like one connection to it."""

    delivers_late = False  # an injected failure is over: nothing arrives later

    def __init__(
        self,
        files: dict[tuple[str, str], bytes],
        events: list[tuple[str, str]],
        fail: Callable[[str, str], bool] = lambda op, name: False,
        on_write: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.files = files
        self.events = events
        self.fail = fail  # (operation, name) → raise a transient error instead
        self.on_write = on_write
        self.closed = False

    def _op(self, op: str, folder: str, name: str) -> tuple[str, str]:
        check_folder(folder)
        check_remote_name(name)
        if self.fail(op, name):
            self.events.append(("failed-" + op, name))
            raise TransientRemoteError(f"{op} {folder}/{name}: connection reset (injected)")
        self.events.append((op, name))
        return folder, name

    def list(self, folder: str) -> list[RemoteEntry]:
        check_folder(folder)
        return [RemoteEntry(n, len(b), "file") for (f, n), b in sorted(self.files.items()) if f == folder]

    def scan(self, folder: str) -> Iterator[RemoteEntry]:
        yield from self.list(folder)

    def put(self, src: BinaryIO, folder: str, name: str) -> None:
        self.on_write(name)
        self.files[self._op("put", folder, name)] = src.read() + src.read()  # the second read ends the stream

    def put_bytes(self, data: bytes, folder: str, name: str) -> None:
        self.on_write(name)
        self.files[self._op("put", folder, name)] = data

    def get(self, folder: str, name: str, dest: BinaryIO, max_size: int) -> int:
        data = self.files[self._op("get", folder, name)]
        if len(data) > max_size:
            raise SizeLimitExceeded(f"{folder}/{name} is larger than poll.max_size; left on the server")
        dest.write(data)
        return len(data)

    def delete(self, folder: str, name: str) -> None:
        self.files.pop(self._op("delete", folder, name), None)

    def get_many(self, folder: str, fetches: Sequence[Fetch], max_size: int) -> None:
        get_each(self, folder, fetches, max_size)

    def delete_many(self, folder: str, names: Sequence[str]) -> None:
        delete_each(self, folder, names)

    def size(self, folder: str, name: str) -> int | None:
        data = self.files.get((folder, name))
        return None if data is None else len(data)

    def exists(self, folder: str, name: str) -> bool:
        return (folder, name) in self.files

    def run_uploads(self, uploads: Iterator[Upload | None], window: int) -> None:
        run_uploads_sequentially(self, uploads)

    def alive(self, ask: bool = True) -> bool:
        return not self.closed

    def abort(self) -> None:
        self.closed = True

    def prepare_uploads(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True
