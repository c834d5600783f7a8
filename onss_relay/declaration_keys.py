"""What a declaration's own answers may name it by, read from its first FI part when it is claimed: each Form's
Identification, creation date and hour (a notification without FileReference names it by these, as its
HandledOriginalForm) and the sender's own reference (``Reference`` of origin 1).

Only the head of each Form is kept (the elements before its body); the body is streamed through and freed, so
memory stays flat whatever the file's size. A file that is not XML has no keys (flat files, binary parts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO
from xml.etree.ElementTree import Element

from onss_relay.responses.reading import ResponseParseError, local, original_form_key, safe_iterparse, text

MAX_FORMS = 1000  # keys of the first forms only: a file with more is linked by its FileName and tickets
HEAD = frozenset({"Identification", "FormCreationDate", "FormCreationHour", "Reference"})


def declaration_keys(path: Path) -> tuple[tuple[str, str], ...]:
    """Given an FI file, return its (kind, value) keys: ``original_form`` per Form, ``sender_ref`` for each
    sender's reference (origin 1); none when the file is not XML or cannot be read."""
    keys: dict[tuple[str, str], None] = {}
    try:
        with path.open("rb") as f:
            for head in _form_heads(f):
                key = original_form_key(
                    *(text(head.get(n)) for n in ("Identification", "FormCreationDate", "FormCreationHour"))
                )
                if key:
                    keys[("original_form", key)] = None
                ref = head.get("Reference")
                if ref is not None and text(ref, "ReferenceOrigin") == "1" and (nbr := text(ref, "ReferenceNbr")):
                    keys[("sender_ref", nbr)] = None
    except (ResponseParseError, OSError):
        return tuple(keys)
    return tuple(keys)


def _form_heads(source: IO[bytes]) -> Iterator[dict[str, Element]]:
    """Given an FI stream, yield for each top-level Form a dict of its head elements (name → element); every
    other element is dropped from its parent as soon as it ends."""
    stack: list[Element] = []
    head: dict[str, Element] = {}
    forms = 0
    for event, el in safe_iterparse(source, ("start", "end")):
        if event == "start":
            stack.append(el)
            continue
        stack.pop()
        name = local(el.tag)
        if len(stack) == 2 and name in HEAD and name not in head:
            head[name] = el  # a Form's head element: kept, with its children, until the Form ends
        elif len(stack) == 1 and name == "Form":
            yield head
            head = {}
            forms += 1
            if forms >= MAX_FORMS:
                return
        if len(stack) >= 3 and local(stack[2].tag) in HEAD:
            continue  # inside a head element: its children are read when it ends
        if stack:
            stack[-1].remove(el)
