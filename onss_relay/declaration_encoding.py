"""Whether a declaration's bytes are in the encoding they claim: found as the XML specification's appendix F
says (a byte-order mark, else the first four bytes, then the prolog's ``encoding``), checked over the parts of
one document read as one byte stream (a later part has no prolog, and a cut may fall inside a character).

Reports only (``declaration.declaration_warnings``): never refuses, never raises on hostile bytes.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

from onss_relay.part_bytes import open_part

CHUNK = 1 << 16
# appendix F: byte-order marks (the longer UTF-32 ones first), then the first four bytes of "<?" without one
BOMS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
)
FIRST_FOUR = {
    b"\x00\x00\x00<": "utf-32-be",
    b"<\x00\x00\x00": "utf-32-le",
    b"\x00<\x00?": "utf-16-be",
    b"<\x00?\x00": "utf-16-le",
}
_PROLOG_START = re.compile(r"^<\?xml\s")
_PROLOG = re.compile(r"""^<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
ASCII_NOTE = "no XML prolog declares an encoding (the ONSS documents say the structured message is ASCII)"


@dataclasses.dataclass(frozen=True)
class Head:
    """What a file's first bytes say: the byte-order mark's length, the encoding family the mark or the first
    four bytes show (None: an ASCII-compatible one), whether an XML prolog is there, and what it declares."""

    bom: int
    family: str | None
    has_prolog: bool
    declared: str | None


def read_head(head: bytes) -> Head:
    """Given a file's first bytes, return what they say of its encoding (appendix F of the XML specification)."""
    bom, family = next(((len(mark), codec) for mark, codec in BOMS if head.startswith(mark)), (0, None))
    family = family or FIRST_FOUR.get(head[:4])
    text = head[bom : bom + 512].decode(family or "iso-8859-1", errors="replace")
    m = _PROLOG.match(text)
    return Head(bom, family, bool(_PROLOG_START.match(text)), m.group(1) if m else None)


def encoding_problem(parts: list[Path]) -> str | None:
    """Given the FI parts of a set in part order, return how their bytes depart from the encoding they declare
    (or, without a prolog, from ASCII), naming the file and byte; None when they match. A part that starts with
    its own prolog or byte-order mark starts a document; the others continue the one before. Constant memory."""
    for document in _documents(parts):
        if why := _document_problem(document):
            return why
    return None


def _documents(parts: list[Path]) -> Iterator[list[Path]]:
    """Given parts in order, yield them grouped into documents: a part opening with a prolog or a byte-order
    mark starts one."""
    current: list[Path] = []
    for part in parts:
        with open_part(part) as f:
            head = read_head(f.read(512))
        if current and (head.has_prolog or head.bom):
            yield current
            current = []
        current.append(part)
    if current:
        yield current


def _document_problem(parts: list[Path]) -> str | None:
    """Given the parts of one document, return how its bytes depart from its encoding, or None."""
    with open_part(parts[0]) as f:
        head = read_head(f.read(CHUNK))
    if not head.has_prolog and head.family is None:
        return next(filter(None, (_first_non_ascii(p) for p in parts)), None)
    codec, why = _codec_for(head)
    if codec is None:
        return f"{parts[0].name}: {why}"
    return _undecodable(parts, head.bom, codec, head.declared or codec, why)


def _codec_for(head: Head) -> tuple[str | None, str]:
    """Given a document's head, return (the codec to check its bytes with, what its prolog said), or
    (None, why none can be)."""
    declared = head.declared
    said = f"its XML prolog declares {declared}" if declared else "its XML prolog declares no encoding (UTF-8)"
    if not head.has_prolog:
        return head.family, f"its byte-order mark says {head.family}"
    if declared is None:
        return head.family or "utf-8", said
    try:
        info = codecs.lookup(declared)
    except (LookupError, ValueError):
        return None, f"its XML prolog declares encoding {declared!r}, which is unknown"
    if not info._is_text_encoding:  # hex, base64, rot13, zlib: codecs, not character encodings
        return None, f"its XML prolog declares encoding {declared!r}, which is not a character encoding"
    if head.family is None and not _reads_ascii(info.name):  # UTF-16/32, EBCDIC (cp500): not even the prolog
        return None, f"its first bytes are ASCII (no byte-order mark), but its XML prolog declares {declared}"
    if head.family is None:
        return info.name, said
    if not _same_family(info.name, head.family):
        return None, f"its first bytes are {head.family.upper()}, but its XML prolog declares {declared}"
    return head.family, said


def _reads_ascii(codec: str) -> bool:
    """Whether a codec reads the ASCII bytes of a prolog as the same characters (an XML parser told this codec
    could read the document's first line at all)."""
    probe = b'<?xml version="1.0" encoding="x"?>'
    try:
        return codecs.decode(probe, codec) == probe.decode("ascii")
    except (UnicodeError, ValueError, TypeError, LookupError):
        return False


def _same_family(declared: str, family: str) -> bool:
    """Whether a declared codec name (Python's) fits the family the first bytes show ("utf-16" fits
    "utf-16-le"; "utf-8-sig" fits "utf-8")."""
    base = family.rsplit("-", 1)[0] if family.startswith(("utf-16", "utf-32")) else family
    return declared.replace("_", "-").startswith(base)


def _undecodable(parts: list[Path], skip: int, codec: str, shown: str, said: str) -> str | None:
    """Given a document's parts, the byte-order mark to skip, a codec (and its name as written) and what the
    prolog said, decode the parts as one stream; return where the first byte that codec refuses is (file and
    offset in it), or None."""
    decoder = codecs.getincrementaldecoder(codec)("strict")
    for part in parts:
        with open_part(part) as f:
            f.seek(skip if part is parts[0] else 0)
            offset = f.tell()
            while chunk := f.read(CHUNK):
                pending = _pending(decoder)
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    return f"{part.name}: byte {max(0, offset - pending + e.start)} is not valid {shown}, but {said}"
                except (UnicodeError, ValueError, TypeError) as e:
                    return f"{part.name}: cannot be read as {shown} ({e}), but {said}"
                offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except (UnicodeError, ValueError, TypeError):
        return f"{parts[-1].name}: ends inside a {shown} character, but {said}"
    return None


def _pending(decoder: codecs.IncrementalDecoder) -> int:
    """How many bytes the decoder holds from the chunks before (a character cut between them)."""
    try:
        state = decoder.getstate()
    except (AttributeError, TypeError, ValueError):
        return 0
    buffered = state[0] if isinstance(state, tuple) and state else b""
    return len(buffered) if isinstance(buffered, bytes) else 0


def _first_non_ascii(part: Path) -> str | None:
    """Given a file without an XML prolog, say where its first non-ASCII byte is, or return None."""
    offset = 0
    with open_part(part) as f:
        while chunk := f.read(CHUNK):
            if not chunk.isascii():
                at = offset + next(i for i, b in enumerate(chunk) if b > 0x7F)
                return f"{part.name}: byte {at} is not ASCII and {ASCII_NOTE}"
            offset += len(chunk)
    return None
