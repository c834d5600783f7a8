"""What a declaration's own answers may name it by, read from its first FI part when it is claimed: its first
Form's Identification, creation date and hour (a notification without FileReference names the declaration by
these, as its HandledOriginalForm) and the sender's own reference (``Reference`` of origin 1).

Only the head of the first Form is read (the elements before its body): reading stops where the body starts,
so a 500 MB DmfA costs no more than a small one. A file that is not XML has no keys (flat files, binary parts).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO
from xml.etree.ElementTree import Element

from onss_relay.responses.reading import ResponseParseError, local, original_form_key, safe_iterparse, text

HEAD = frozenset({"Identification", "FormCreationDate", "FormCreationHour", "Reference"})
BEFORE_BODY = HEAD | {"AttestationStatus", "TypeForm"}  # a Form's head; any other child starts its body


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
    """Given an FI stream, yield the head elements (name → element) of its first Form, read up to where its
    body starts (or the root's first child ends, whatever its name), and stop: constant memory."""
    stack: list[Element] = []
    head: dict[str, Element] = {}
    for event, el in safe_iterparse(source, ("start", "end")):
        if event == "start":
            stack.append(el)
            if len(stack) == 3 and local(el.tag) not in BEFORE_BODY:
                yield head  # the body of the first Form starts: its head is complete
                return
            continue
        stack.pop()
        name = local(el.tag)
        if len(stack) == 2 and name in HEAD and name not in head:
            head[name] = el
        elif len(stack) == 1:  # the root's first child ended (a Form, or whatever a flat file holds): done
            yield head
            return
        elif len(stack) == 2:
            el.clear()  # a head element we do not keep: nothing of it stays in memory
