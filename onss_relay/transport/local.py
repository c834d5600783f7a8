"""A local or mounted directory standing for the remote home (demo, simulator, Isabel/MQLink-style shares).

Placement is atomic: each file is written under a dot-temp name in its target folder, fsynced, then renamed.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from onss_relay.durable import fsync_dir
from onss_relay.errors import PermanentRemoteError
from onss_relay.names import ALL_FOLDERS
from onss_relay.transport.base import (
    COPY_CHUNK,
    RemoteEntry,
    Upload,
    check_folder,
    check_remote_name,
    classify_os_error,
    copy_capped,
    run_uploads_sequentially,
)
from onss_relay.transport.batch import Fetch, delete_each, get_each


class LocalTransport:
    """Given a directory holding IN, INTEST, INTEST-S, OUT, OUTTEST, OUTTEST-S, act as the remote home."""

    delivers_late = False  # a file operation that failed is over: nothing arrives later

    def __init__(self, home: Path) -> None:
        self.home = home
        if not home.is_dir():
            raise PermanentRemoteError(f"{home}: the local remote folder (remote.base_dir) does not exist")

    def _path(self, folder: str, name: str | None = None) -> Path:
        base = self.home / check_folder(folder)
        return base if name is None else base / check_remote_name(name)

    def list(self, folder: str) -> list[RemoteEntry]:
        return sorted(self.scan(folder), key=lambda e: e.name)

    def scan(self, folder: str) -> Iterator[RemoteEntry]:
        try:
            with os.scandir(self._path(folder)) as it:
                for entry in it:
                    try:
                        size_and_kind = _size_and_kind(entry)
                    except FileNotFoundError:  # gone since the folder was read (a temp renamed): not there
                        continue
                    yield RemoteEntry(entry.name, *size_and_kind)
        except OSError as e:
            raise classify_os_error(e, f"listing {folder}") from None

    def put(self, src: BinaryIO, folder: str, name: str) -> None:
        self._place(src, folder, name)

    def put_bytes(self, data: bytes, folder: str, name: str) -> None:
        self._place(io.BytesIO(data), folder, name)

    def _place(self, src: BinaryIO, folder: str, name: str) -> None:
        target = self._path(folder, name)
        temp = target.with_name(f".{name}.part")
        try:
            with temp.open("wb") as dst:
                while chunk := src.read(COPY_CHUNK):
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(temp, target)
            fsync_dir(target.parent)
        except BaseException as e:
            with contextlib.suppress(OSError):
                temp.unlink()
            if isinstance(e, OSError):
                raise classify_os_error(e, f"writing {folder}/{name}") from None
            raise

    def get(self, folder: str, name: str, dest: BinaryIO, max_size: int) -> int:
        path = self._path(folder, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as src:
                if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                    raise PermanentRemoteError(f"{folder}/{name} is not a regular file")
                return copy_capped(src, dest, max_size, f"{folder}/{name}")
        except OSError as e:
            raise classify_os_error(e, f"reading {folder}/{name}") from None

    def delete(self, folder: str, name: str) -> None:
        try:
            self._path(folder, name).unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise classify_os_error(e, f"deleting {folder}/{name}") from None

    def get_many(self, folder: str, fetches: Sequence[Fetch], max_size: int) -> None:
        get_each(self, folder, fetches, max_size)

    def delete_many(self, folder: str, names: Sequence[str]) -> None:
        delete_each(self, folder, names)

    def size(self, folder: str, name: str) -> int | None:
        try:
            st = self._path(folder, name).lstat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise classify_os_error(e, f"checking {folder}/{name}") from None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def exists(self, folder: str, name: str) -> bool:
        return self.size(folder, name) is not None

    def alive(self, ask: bool = True) -> bool:
        return True

    def prepare_uploads(self) -> None:
        pass

    def run_uploads(self, uploads: Iterator[Upload | None], window: int = 1) -> None:
        run_uploads_sequentially(self, uploads)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def make_remote_home(home: Path) -> Path:
    """Given a directory, create the six transfer-point folders in it and return it."""
    for folder in ALL_FOLDERS:
        (home / folder).mkdir(parents=True, exist_ok=True)
    return home


def _size_and_kind(entry: os.DirEntry[str]) -> tuple[int, str]:
    """Given a directory entry, return its size and kind ("file", "dir", "link" or "other"), links not followed."""
    st = entry.stat(follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        return st.st_size, "link"
    if stat.S_ISDIR(st.st_mode):
        return st.st_size, "dir"
    return st.st_size, "file" if stat.S_ISREG(st.st_mode) else "other"
