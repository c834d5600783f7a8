"""What a declaration's own answers may name it by, read from its FI parts when it is claimed: each Form's
Identification, creation date and hour (a notification without FileReference names the declaration by these,
as its HandledOriginalForm; a multi-Form Dimona is answered Form by Form) and the sender's own reference
(``Reference`` of origin 1); and each worker it declares (``worker``: every ``INSS`` element's 11 digits), so
that a search by INSS finds a worker's declaration before any notification names the worker, and when none
ever will (refused by its ACRF).

Only the head of each Form is parsed (the elements before its body). The file is scanned as bytes for the
start tag of each Form (``<Form`` or ``<prefix:Form``), and a window of the file from there is parsed (with
defusedxml, under the root's start tag and its namespace declarations) until the Form's body starts: a 500 MB
DmfA is read at disk speed, in constant memory. A Form start tag inside a comment or CDATA would be read as
one (its head then gives no key, or a key no answer names). A file that is not XML has no
keys (flat files, binary parts); a DTD is refused (no keys); a Form whose head cannot be parsed gives none.
A UTF-16 file (with its byte-order mark) is transcoded to UTF-8 first, a chunk at a time through an
incremental decoder into a temporary file, and that is scanned the same way (bounded memory).
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import io
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast
from xml.etree.ElementTree import ParseError

import structlog
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from onss_relay.part_bytes import open_part
from onss_relay.responses.reading import local, original_form_key

log = structlog.get_logger(__name__)

HEAD = frozenset({"Identification", "FormCreationDate", "FormCreationHour", "Reference"})
BEFORE_BODY = HEAD | {"AttestationStatus", "TypeForm"}  # a Form's head; any other child starts its body
MAX_FORMS = 20_000  # Forms read per set (their keys about 2 MB): further Forms are answered by file name or ticket
MAX_WORKERS = 20_000  # workers (INSS) recorded per set: a search finds the others once a notification names them
WORKER = re.compile(rb"INSS>\s*([0-9]{11})\s*</")  # after "<INSS" or "<prefix:INSS": one worker's number
OPENS_FORM = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?\Z")  # what comes before "Form" in its start tag
AFTER_NAME = frozenset(b" \t\r\n>/")  # what follows the name "Form" in its start tag (not FormCreationDate)
CHUNK = 4 << 20  # bytes scanned at a time
SMALL_CHUNK = 64 << 10  # the least scanned at a time: a smaller stream is read whole (see _chunk_for)
TAG_ROOM = 256  # bytes a Form start tag may take (a long namespace prefix)
WINDOW = 16 << 10  # bytes of a Form parsed for its head (a head is a few hundred)
COMMENT = re.compile(rb"<!--.*?-->", re.DOTALL)
ROOT_START = re.compile(rb"<(?![?!/])[^>]*>")  # the root's start tag (after the prolog, comments removed)
PROLOG = re.compile(rb"""^(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")


def declaration_keys(*paths: Path) -> tuple[tuple[str, str], ...]:
    """Given a set's FI files (the parts of one declaration), return their (kind, value) keys: ``original_form``
    per Form, ``sender_ref`` for each sender's reference (origin 1), for at most MAX_FORMS Forms; none for a
    file that is not XML; then ``worker`` for each INSS it declares (at most MAX_WORKERS). The parts are read as
    one stream, in part order: their concatenation is the declaration (a Form may span a cut; a namespace
    prefix is declared once, in part 1's root)."""
    keys: dict[tuple[str, str], None] = {}
    try:
        with contextlib.ExitStack() as stack:
            files: list[IO[bytes]] = [stack.enter_context(open_part(p)) for p in sorted(paths, key=_part_number)]
            joined = files[0] if len(files) == 1 else cast(IO[bytes], _Joined(files))  # one part: itself
            f, encoding = stack.enter_context(_as_utf8(joined))
            for forms, head in enumerate(_form_heads(f, encoding), 1):
                _add_keys(keys, head)
                if forms >= MAX_FORMS:
                    log.warning(
                        "declaration_keys_capped",
                        file=paths[0].name,
                        detail=f"only its first {MAX_FORMS} Forms are recorded",
                    )
                    break
            keys.update(dict.fromkeys(("worker", inss) for inss in _workers(f)))
    except OSError as e:
        log.warning("declaration_keys_unreadable", error=str(e))
    return tuple(keys)


def _workers(f: IO[bytes]) -> list[str]:
    """Given an FI stream (UTF-8 or ASCII-compatible), return the INSS of each worker it declares, in file order,
    at most MAX_WORKERS: every ``<INSS>`` or ``<prefix:INSS>`` element holding 11 digits, found by scanning
    CHUNK bytes at a time (an element in a comment counts too; a search showing one set too many is harmless)."""
    found: dict[str, None] = {}
    chunk = _chunk_for(f)
    buffer = bytearray(TAG_ROOM + chunk)  # the end of the last chunk (scanned again), then the next chunk
    f.seek(0)
    kept = 0
    while len(found) < MAX_WORKERS:
        got = f.readinto(memoryview(buffer)[kept : kept + chunk])  # type: ignore[attr-defined]
        end = kept + got
        at = buffer.find(b"INSS>", 0, end)
        while at != -1 and len(found) < MAX_WORKERS:
            if at > 0 and buffer[at - 1] in b"<:" and (m := WORKER.match(buffer, at, end)):
                found[m.group(1).decode()] = None
            at = buffer.find(b"INSS>", at + 5, end)
        if got < chunk:
            break
        buffer[:TAG_ROOM] = buffer[end - TAG_ROOM : end]  # an element cut at the chunk's end is whole next time
        kept = TAG_ROOM
    return list(found)


def _chunk_for(f: IO[bytes]) -> int:
    """Given a seekable FI stream, return how many bytes to scan at a time: CHUNK, or less for a smaller stream
    (its whole size and one byte, so that the first read is short and the last; at least SMALL_CHUNK). The
    buffer is zeroed when made, twice per set: 8 MB for a 2 KB declaration took 40 % of claiming and signing's
    CPU (bench/profile_upload.py)."""
    return max(SMALL_CHUNK, min(CHUNK, f.seek(0, io.SEEK_END) + 1))


def _part_number(path: Path) -> int:
    """Given an FI part's path, return its part number (the name's last field; 0 when it has none)."""
    last = path.name.rsplit(".", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Joined(io.RawIOBase):
    """The parts of a declaration read as one seekable stream (their concatenation)."""

    def __init__(self, files: list[IO[bytes]]) -> None:
        super().__init__()
        self._files = files
        self._starts = [0]
        for f in files:
            self._starts.append(self._starts[-1] + f.seek(0, io.SEEK_END))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Given an offset from the start (or the current place), move there and return the new place."""
        self._pos = (
            offset
            if whence == io.SEEK_SET
            else self._pos + offset
            if whence == io.SEEK_CUR
            else offset + self._starts[-1]
        )
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Given a buffer, fill it from the current place across parts, return how many bytes (short only at
        the end)."""
        view, got = memoryview(buffer).cast("B"), 0
        while got < len(view) and self._pos < self._starts[-1]:
            part = bisect.bisect_right(self._starts, self._pos) - 1
            f = self._files[part]
            f.seek(self._pos - self._starts[part])
            n = f.readinto(view[got : got + min(len(view) - got, self._starts[part + 1] - self._pos)])  # type: ignore[attr-defined]
            if not n:
                break
            got, self._pos = got + n, self._pos + n
        return got


def _add_keys(keys: dict[tuple[str, str], None], head: dict[str, str]) -> None:
    """Given the keys found so far and one Form's head (name → text), add its keys."""
    key = original_form_key(head.get("Identification"), head.get("FormCreationDate"), head.get("FormCreationHour"))
    if key:
        keys[("original_form", key)] = None
    for n in range(int(head.get("Reference#", "0"))):  # every Reference of the head, not only the first
        if head.get(f"Reference{n}/ReferenceOrigin") == "1" and (nbr := head.get(f"Reference{n}/ReferenceNbr")):
            keys[("sender_ref", nbr)] = None


@contextlib.contextmanager
def _as_utf8(raw: IO[bytes]) -> Iterator[tuple[IO[bytes], str | None]]:
    """Given an FI stream, yield it with no encoding forced; or, when it is UTF-16 (a byte-order mark), yield a
    temporary UTF-8 copy, transcoded CHUNK bytes at a time, with "UTF-8" forced over its prolog's encoding."""
    if raw.read(2) not in (b"\xff\xfe", b"\xfe\xff"):
        raw.seek(0)
        yield raw, None
        return
    raw.seek(0)
    decoder = codecs.getincrementaldecoder("utf-16")(errors="replace")
    with tempfile.TemporaryFile() as copy:
        while chunk := raw.read(CHUNK):
            copy.write(decoder.decode(chunk).encode("utf-8"))
        copy.write(decoder.decode(b"", final=True).encode("utf-8"))
        copy.seek(0)
        yield copy, "UTF-8"


def _form_heads(f: IO[bytes], forced: str | None = None) -> Iterator[dict[str, str]]:
    """Given an FI stream (and the encoding to read it in, over its prolog's), yield the head (name → text) of
    each Form it holds, in file order, scanning CHUNK bytes at a time through one buffer (constant memory)."""
    start = f.read(WINDOW)
    if b"<!DOCTYPE" in start:
        return  # a DTD: refused, as every XML the relay reads
    found = PROLOG.match(start)
    encoding = forced or (found.group(1).decode("ascii") if found else "UTF-8")
    root = ROOT_START.search(COMMENT.sub(b"", start))
    if root is None or root.group(0).endswith(b"/>"):
        return  # not XML, or an empty root: no Form
    chunk = _chunk_for(f)
    buffer = bytearray(TAG_ROOM + chunk)  # the end of the last chunk (scanned again), then the next chunk
    offset, kept = 0, 0  # the next chunk's offset in the file; how many bytes of the last one are kept
    while True:
        f.seek(offset)
        got = f.readinto(memoryview(buffer)[kept : kept + chunk])  # type: ignore[attr-defined]
        end, base, last = kept + got, offset - kept, got < chunk
        limit = end if last else end - TAG_ROOM  # a tag cut at the chunk's end is found with the next one
        for at in _tags_in(buffer, end, limit):
            if at + WINDOW > end and not last:  # its head may run past the chunk: read it from the file
                f.seek(base + at)
                window = f.read(WINDOW)
            else:
                window = bytes(buffer[at : min(end, at + WINDOW)])
            if head := _parse_head(root.group(0), window, encoding):
                yield head
        if last:
            return
        buffer[: end - limit] = buffer[limit:end]
        offset, kept = offset + got, end - limit


def _tags_in(data: bytearray, end: int, limit: int) -> Iterator[int]:
    """Given a buffer, where its bytes end and where to stop, yield where each Form start tag (``<Form``,
    ``<prefix:Form``) begins: "Form" is looked for at C speed (it is rare in a body), then what surrounds it
    checked."""
    at = data.find(b"Form", 0, min(end, limit + TAG_ROOM))
    while at != -1:
        name_ends = at + 4 < end and data[at + 4] in AFTER_NAME
        opened = OPENS_FORM.search(data, max(0, at - TAG_ROOM), at) if name_ends else None
        if opened is not None and opened.start() < limit:
            yield opened.start()
        at = data.find(b"Form", at + 4, min(end, limit + TAG_ROOM))


class _HeadDone(Exception):
    """The Form's body started or the Form ended: its head is read."""


class _Head:
    """A parser target that keeps the texts of a Form's head elements (the children of its n-th Reference, from
    0, as Reference<n>/ReferenceNbr …, their number as Reference#) and stops the parse where the Form's body
    starts or the Form ends."""

    def __init__(self) -> None:
        self.head: dict[str, str] = {}
        self._path: list[str] = []  # the root, the Form, …
        self._text: list[str] = []

    def start(self, tag: str, _attrib: dict[str, str]) -> None:
        self._path.append(local(tag).rsplit(":", 1)[-1])
        if len(self._path) == 3 and self._path[2] not in BEFORE_BODY:
            raise _HeadDone
        self._text.clear()

    def end(self, _tag: str) -> None:
        name = "/".join(self._path[2:])
        self._path.pop()
        if len(self._path) < 2:
            raise _HeadDone
        said = "".join(self._text).strip()
        if name.split("/", 1)[0] not in HEAD:
            pass
        elif name == "Reference":  # one more Reference read: its children were kept under its number
            self.head["Reference#"] = str(int(self.head.get("Reference#", "0")) + 1)
        elif said:
            name = name.replace("Reference/", f"Reference{self.head.get('Reference#', '0')}/", 1)
            self.head.setdefault(name, said)
        self._text.clear()

    def data(self, text: str) -> None:
        self._text.append(text)

    def close(self) -> None:
        return None


def _parse_head(root: bytes, window: bytes, encoding: str) -> dict[str, str]:
    """Given the file's root start tag (its namespace declarations) and the bytes of a Form from its start tag,
    return the texts of the Form's head elements; {} when the head cannot be parsed (defusedxml, DTD refused)."""
    target = _Head()
    parser = DefusedXMLParser(target=target, encoding=encoding, forbid_dtd=True)
    try:
        parser.feed(root)
        parser.feed(window)
    except _HeadDone:
        return target.head
    except (ParseError, DefusedXmlException, LookupError, ValueError):
        return {}
    return target.head  # the window ended inside the head (a truncated file): what was read
