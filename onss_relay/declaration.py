"""What a declaration file must be before it is claimed and signed: no longer being written, and, when it is
XML, well-formed; and what is reported about it without refusing it (encoding, environment).

Both are checks a settle delay cannot make: a writer that pauses keeps the file's size and mtime still, and
a truncated XML file looks settled for ever. Linux says which files a process holds open for writing
(``/proc/PID/fd`` and the flags in ``/proc/PID/fdinfo``); processes the relay may not inspect (another user's,
without CAP_SYS_PTRACE) are not seen, which is why writers should still write under a temporary name and
rename (README). The XML check streams the file through expat: constant memory whatever its size.
"""

from __future__ import annotations

import os
import xml.parsers.expat
from collections.abc import Iterable
from pathlib import Path

from onss_relay.declaration_encoding import encoding_problem
from onss_relay.names import Name, environment_note
from onss_relay.part_bytes import open_part

CHUNK = 1 << 16
ANY_BYTE = "iso-8859-1"  # an encoding in which every byte is a character: structure checked, encoding not


def open_for_writing(paths: Iterable[Path], proc: Path = Path("/proc")) -> set[Path]:
    """Given files, return those that a process on this machine (other than this one) holds open for writing."""
    wanted: dict[str, list[tuple[Path, tuple[int, int]]]] = {}
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        wanted.setdefault(p.name, []).append((p, (st.st_dev, st.st_ino)))
    if not wanted:
        return set()
    busy: set[Path] = set()
    me = str(os.getpid())
    try:
        pids = [d for d in os.listdir(proc) if d.isdigit() and d != me]
    except OSError:
        return busy
    root = os.fspath(proc)
    for pid in pids:
        busy |= _written_by(f"{root}/{pid}", wanted)
    return busy


def _written_by(pid_dir: str, wanted: dict[str, list[tuple[Path, tuple[int, int]]]]) -> set[Path]:
    """Given a /proc/PID folder, return the wanted files this process holds open for writing (plain strings for
    the paths looked at: this runs for every descriptor of every process)."""
    found: set[Path] = set()
    fd_dir = f"{pid_dir}/fd/"
    try:
        fds = os.listdir(fd_dir)
    except OSError:  # gone, or not ours to inspect
        return found
    for fd in fds:
        link = fd_dir + fd
        try:
            target = os.readlink(link)
        except OSError:
            continue
        candidates = wanted.get(target.removesuffix(" (deleted)").rpartition("/")[2])
        if not candidates:
            continue
        try:
            st = os.stat(link)  # follows the magic link to the open file itself, wherever it was renamed
            flags = _fd_flags(f"{pid_dir}/fdinfo/{fd}")
        except OSError:
            continue
        if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
            found |= {p for p, ident in candidates if ident == (st.st_dev, st.st_ino)}
    return found


def _fd_flags(fdinfo: str) -> int:
    with open(fdinfo) as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    return 0


def looks_like_xml(path: Path) -> bool:
    """Whether the file starts (after a byte-order mark and white space) with ``<``."""
    with open_part(path) as f:
        head = f.read(512)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")


class _EntityDeclared(Exception):
    pass


def xml_problem(paths: list[Path]) -> str | None:
    """Given the FI parts of a set (in part order), return why their XML is not well-formed, or None (well-formed,
    or not XML). Each part may be a whole document, or the parts together one document cut in pieces."""
    if not any(looks_like_xml(p) for p in paths):
        return None
    first = next(((p, why) for p in paths if (why := _problem_in([p])) is not None), None)
    if first is None:
        return None
    if len(paths) > 1 and _problem_in(paths) is None:
        return None  # one document split across the parts
    if _only_mis_encoded(paths):
        return None  # reported as a warning (declaration_warnings), never refused
    return f"{first[0].name}: {first[1]}"


def _only_mis_encoded(paths: list[Path]) -> bool:
    """Given parts expat refused as declared, return True when some part's bytes depart from its declared
    encoding and the parts are well-formed read byte for byte (ISO-8859-1 takes every byte): the fault is the
    encoding, which the relay reports, not the structure."""
    if not encoding_problem(paths):
        return False
    every_part = all(_problem_in([p], ANY_BYTE) is None for p in paths)
    return every_part or (len(paths) > 1 and _problem_in(paths, ANY_BYTE) is None)


def _problem_in(paths: list[Path], encoding: str | None = None) -> str | None:
    """Given files read one after the other as one document (in ``encoding`` whatever they declare, when
    given), return expat's complaint, or None."""
    parser = xml.parsers.expat.ParserCreate(encoding)
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse_entities(*_: object) -> None:
        raise _EntityDeclared

    parser.EntityDeclHandler = refuse_entities  # no entity expansion bombs from an outbox
    try:
        for path in paths:
            with open_part(path) as f:
                while chunk := f.read(CHUNK):
                    parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except xml.parsers.expat.ExpatError as e:
        return f"not well-formed XML at line {e.lineno}, column {e.offset}: {xml.parsers.expat.ErrorString(e.code)}"
    except _EntityDeclared:
        return "XML declares entities (refused: a declaration never needs them)"
    except (LookupError, UnicodeError, ValueError) as e:  # expat asked Python for an encoding it lacks (hex …)
        return f"its XML prolog declares an encoding that cannot be read: {e}"
    return None


def declaration_warnings(go: Name, parts: list[Path]) -> tuple[str, ...]:
    """Given a set's GO name and its FI files, return what the ONSS documents say against them, to report
    (never to refuse): an environment they do not list for the application, an encoding mismatch."""
    found = [environment_note(go), encoding_problem(parts)]
    return tuple(w for w in found if w)
