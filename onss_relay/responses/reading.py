"""Reading response files safely: decompress CO files, stream XML (defusedxml, DTDs refused) by local names.

Pure functions over bytes and files; what each answer type means is in its own module of this package.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

MAX_DECOMPRESSED = 256 << 20


class ResponseParseError(ValueError):
    """A response file is not the XML we expect; it is kept in the inbox and reported."""


def local(tag: str) -> str:
    """Given an element tag, return its local name ({namespace}Form → Form): a default namespace is tolerated."""
    return tag.rsplit("}", 1)[-1]


def safe_iterparse(source: IO[bytes], events: tuple[str, ...]) -> Iterator[tuple[str, Element]]:
    """Given an XML stream, yield iterparse's (event, element) pairs; DTDs refused, errors as ResponseParseError."""
    try:
        yield from SafeET.iterparse(source, events=events, forbid_dtd=True)
    except DefusedXmlException as e:
        raise ResponseParseError(f"refused unsafe XML ({type(e).__name__})") from None
    except SafeET.ParseError as e:
        raise ResponseParseError(f"not well-formed XML ({e})") from None
    except (LookupError, ValueError) as e:  # an encoding expat does not know, undecodable bytes
        raise ResponseParseError(f"unreadable XML ({e})") from None


def iter_forms(
    source: IO[bytes],
    root_name: str,
    form_name: str = "Form",
    item: str = "",
    each: Callable[[Element], None] | None = None,
) -> Iterator[Element]:
    """Given an XML stream whose root is ``root_name``, yield each ``form_name`` child, complete, then free it.
    When ``item`` is given, every element of that name inside a form is handed to ``each`` as it ends and
    dropped from the form at once (a DmfA notification's AnomalyReports: tens of thousands in one Form).

    Memory stays bounded by the largest form (without its items), whatever the file's size. Encodings (UTF-8
    with or without BOM, ISO-8859-1 declared in the prolog) are expat's; CRLF is XML whitespace.
    """
    stack: list[Element] = []
    for event, el in safe_iterparse(source, ("start", "end")):
        if event == "start":
            stack.append(el)
            if len(stack) == 1 and local(el.tag) != root_name:
                raise ResponseParseError(f"root element is {local(el.tag)!r}, not {root_name}")
            continue
        stack.pop()
        if len(stack) >= 2 and item and each is not None and local(el.tag) == item:
            each(el)
            stack[-1].remove(el)  # handed over: drop it, so that memory does not grow with the form
        elif len(stack) == 1:
            if local(el.tag) == form_name:
                yield el
            stack[0].remove(el)  # done with it: drop it, so that memory does not grow with the file


def original_form_key(identification: str | None, date: str | None, hour: str | None) -> str | None:
    """Given a Form's Identification, creation date and hour, return the key both sides record, or None."""
    if not (identification and date and hour):
        return None
    return f"{identification}|{date}|{hour}"


def root_name(source: IO[bytes]) -> str:
    """Given an XML stream, return the local name of its root element (reading only up to it)."""
    for _, el in safe_iterparse(source, ("start",)):
        return local(el.tag)
    raise ResponseParseError("empty XML document")


def child(el: Element, *path: str) -> Element | None:
    """Given an element and local names, return the first descendant along that path (any namespace)."""
    current: Element | None = el
    for name in path:
        if current is None:
            return None
        current = next((c for c in current if local(c.tag) == name), None)
    return current


def text(el: Element | None, *path: str) -> str | None:
    """Given an element and a path of local names, return the stripped text there, or None when empty."""
    found = child(el, *path) if el is not None and path else el
    if found is None or found.text is None or not found.text.strip():
        return None
    return found.text.strip()


def texts(el: Element | None, name: str) -> tuple[str, ...]:
    """Given an element, return the texts of its direct children called ``name``."""
    if el is None:
        return ()
    return tuple(c.text.strip() for c in el if local(c.tag) == name and c.text and c.text.strip())


def find_all(el: Element, name: str) -> Iterator[Element]:
    """Given an element, yield every descendant with local name ``name``."""
    for d in el.iter():
        if d is not el and local(d.tag) == name:
            yield d


def flatten_path(el: Element | None) -> str | None:
    """Given an anomaly's Path element, return one line: its text, or its child elements as name=value / …"""
    if el is None:
        return None
    own = (el.text or "").strip()
    parts = []
    for c in el.iter():
        if c is el:
            continue
        value = (c.text or "").strip()
        if value:
            parts.append(f"{local(c.tag)}={value}")
    joined = " / ".join(parts)
    return " / ".join(p for p in (own, joined) if p) or None


@contextlib.contextmanager
def open_response(path: Path, compressed: bool, limit: int = MAX_DECOMPRESSED) -> Iterator[IO[bytes]]:
    """Given a mirrored response file (a CO file: gzip, zip or zlib), yield a stream of its XML.

    Nothing is read into memory: a CO file is decompressed as it is read, and refused past ``limit`` bytes.
    """
    with path.open("rb") as raw:
        if not compressed:
            yield raw
            return
        with _decompressing(raw, limit) as stream:
            yield stream


@contextlib.contextmanager
def _decompressing(raw: IO[bytes], limit: int) -> Iterator[IO[bytes]]:
    """Given a seekable CO stream (gzip, zip or zlib), yield its content as a stream capped at ``limit`` bytes."""
    magic = raw.read(4)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        yield io.BufferedReader(_Capped(gzip.GzipFile(fileobj=raw), limit))
    elif magic == b"PK\x03\x04":
        with _zip_member(raw) as f:
            yield io.BufferedReader(_Capped(f, limit))
    else:
        yield io.BufferedReader(_Capped(_ZlibStream(raw), limit))


@contextlib.contextmanager
def _zip_member(raw: IO[bytes]) -> Iterator[IO[bytes]]:
    """Given a seekable zip stream, yield its one member's content; a damaged or unusual zip (no central
    directory, truncated, encrypted, an unknown method, several files) is a ResponseParseError."""
    damaged = (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        RuntimeError,
        ValueError,
        OSError,
        lzma.LZMAError,
    )
    try:
        z = zipfile.ZipFile(raw)
    except damaged as e:
        raise ResponseParseError(f"CO file is a damaged zip ({e or type(e).__name__})") from None
    with z:
        members = [i for i in z.infolist() if not i.is_dir()]
        if len(members) != 1:
            raise ResponseParseError(f"compressed response holds {len(members)} files; expected 1")
        try:
            member = z.open(members[0])
        except damaged as e:
            raise ResponseParseError(f"CO file is a damaged zip ({e or type(e).__name__})") from None
        with member:
            yield member


class _Capped(io.RawIOBase):
    """A read-only stream that refuses to give more than ``limit`` bytes and reports damage as a parse error."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile | io.RawIOBase, limit: int) -> None:
        self.inner = inner
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            chunk = self.inner.read(len(buffer))
        except (
            OSError,
            EOFError,
            zlib.error,
            lzma.LZMAError,
            zipfile.BadZipFile,
            NotImplementedError,
            RuntimeError,
        ) as e:
            raise ResponseParseError(f"CO file is damaged ({e})") from None  # LZMAError: a zip member of method 14
        if chunk is None:
            return 0
        self.left -= len(chunk)
        if self.left < 0:
            raise ResponseParseError("compressed response expands beyond the limit")
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _ZlibStream(io.RawIOBase):
    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.d = zlib.decompressobj()
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending:
            data = self.d.unconsumed_tail or self.raw.read(1 << 16)
            if not data:
                self.pending = self.d.flush()
                if not self.pending:
                    return 0
                break
            try:
                self.pending = self.d.decompress(data, 1 << 20)
            except zlib.error:
                raise ResponseParseError("CO file is not gzip, zip or zlib data") from None
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def decompress(data: bytes, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Given a CO file's bytes (gzip, zip or zlib), return the content, refusing more than ``limit`` bytes."""
    with _decompressing(io.BytesIO(data), limit) as stream:
        return stream.read()
