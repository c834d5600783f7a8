"""A set's FI parts read once for the claim's checks, when they are small.

The claim checks each FI several ways before it queues the set: well-formed XML (``declaration.xml_problem``),
the encoding it declares (``declaration_encoding``), the keys its answers name it by (``declaration_keys``), its
content digest (``same_content``). Each check streams the file itself (constant memory, whatever its size);
for a small declaration that was seven opens and reads of the same 2 KB. Within ``read_once``, the parts of a
set together at most READ_ONCE_MAX bytes are read once and every check reads those bytes (``open_part``): the
same code runs over the same bytes, a larger set is streamed as before. A part that cannot be read is not
held: its checks open the file and meet the error themselves, as without this.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

READ_ONCE_MAX = 1 << 20  # bytes of a set's FI parts held for its checks; a larger set is streamed part by part

_held = threading.local()  # the daemon claims in a thread of its own: what one thread holds, only it reads


@contextlib.contextmanager
def read_once(parts: list[Path]) -> Iterator[None]:
    """Given a set's FI files, hold their bytes while the block runs when together they are at most
    READ_ONCE_MAX bytes (none held otherwise): ``open_part`` of a held file reads them, not the file."""
    previous = getattr(_held, "files", None)
    _held.files = _read_small(parts)
    try:
        yield
    finally:
        _held.files = previous


def _read_small(parts: list[Path]) -> dict[Path, bytes]:
    """Given FI files, return their bytes by path when they add up to at most READ_ONCE_MAX; {} when they do
    not. A file that cannot be read is left out (its checks meet the error on the file itself)."""
    held: dict[Path, bytes] = {}
    room = READ_ONCE_MAX
    for path in parts:
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > room:
                    return {}
                data = f.read(size + 1)  # one byte more than its size: the end of file, or a file still growing
        except OSError:
            continue
        if len(data) != size:  # written to while read: streamed, each check reading it as it finds it
            return {}
        held[path] = data
        room -= len(data)
    return held


def _held_bytes(path: Path) -> bytes | None:
    """Given an FI file, return its bytes held by ``read_once`` in this thread, or None."""
    held: dict[Path, bytes] | None = getattr(_held, "files", None)
    return held.get(path) if held else None


def open_part(path: Path) -> BinaryIO:
    """Given an FI file, open it for reading: its bytes held by ``read_once``, or the file itself."""
    data = _held_bytes(path)
    return io.BytesIO(data) if data is not None else path.open("rb")


def part_size(path: Path) -> int:
    """Given an FI file, return its size: that of its bytes held by ``read_once``, or the file's."""
    data = _held_bytes(path)
    return len(data) if data is not None else path.stat().st_size
