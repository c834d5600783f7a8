"""What a declaration's own answers may name it by, read from its FI parts when it is claimed: each Form's
Identification, creation date and hour (a notification without FileReference names the declaration by these,
as its HandledOriginalForm; a multi-Form Dimona is answered Form by Form) and the sender's own reference
(``Reference`` of origin 1).

Only the head of each Form is kept (the elements before its body); the body is skipped, every element of it
dropped as it ends, so a 500 MB DmfA costs no more memory than a small one. A file that is not XML has no keys
(flat files, binary parts); one that stops being well-formed keeps the keys read before the fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO
from xml.etree.ElementTree import Element

import structlog

from onss_relay.responses.reading import ResponseParseError, local, original_form_key, safe_iterparse, text

log = structlog.get_logger(__name__)

HEAD = frozenset({"Identification", "FormCreationDate", "FormCreationHour", "Reference"})
BEFORE_BODY = HEAD | {"AttestationStatus", "TypeForm"}  # a Form's head; any other child starts its body
MAX_KEYS = 20_000  # keys kept per set (about 2 MB): a file with more Forms is answered by file name or ticket


def declaration_keys(*paths: Path) -> tuple[tuple[str, str], ...]:
    """Given a set's FI files, return their (kind, value) keys: ``original_form`` per Form of every part,
    ``sender_ref`` for each sender's reference (origin 1), at most MAX_KEYS; none for a file that is not XML."""
    keys: dict[tuple[str, str], None] = {}
    for path in paths:
        try:
            with path.open("rb") as f:
                _add_keys(keys, _form_heads(f))
        except (ResponseParseError, OSError):
            continue
        if len(keys) >= MAX_KEYS:
            log.warning("declaration_keys_capped", file=path.name, kept=MAX_KEYS)
            break
    return tuple(keys)


def _add_keys(keys: dict[tuple[str, str], None], heads: Iterable[dict[str, Element]]) -> None:
    """Given the keys found so far and Form heads as they are read, add each head's keys, up to MAX_KEYS."""
    for head in heads:
        key = original_form_key(
            *(text(head.get(n)) for n in ("Identification", "FormCreationDate", "FormCreationHour"))
        )
        if key:
            keys[("original_form", key)] = None
        ref = head.get("Reference")
        if ref is not None and text(ref, "ReferenceOrigin") == "1" and (nbr := text(ref, "ReferenceNbr")):
            keys[("sender_ref", nbr)] = None
        if len(keys) >= MAX_KEYS:
            return


def _form_heads(source: IO[bytes]) -> Iterator[dict[str, Element]]:
    """Given an FI stream, yield the head elements (name → element) of each child of its root (its Forms, or
    whatever a flat file holds) as that child ends. Every element outside a kept head is dropped from its parent
    as it ends: memory is bounded by one Form's head and one path down the tree, whatever the file's size."""
    stack: list[Element] = []
    head: dict[str, Element] = {}
    in_body = False
    for event, el in safe_iterparse(source, ("start", "end")):
        if event == "start":
            stack.append(el)
            in_body = in_body or (len(stack) == 3 and local(el.tag) not in BEFORE_BODY)
            continue
        stack.pop()
        if len(stack) == 1:  # a child of the root ended: its head is complete
            yield head
            head, in_body = {}, False
        elif len(stack) == 2 and not in_body and local(el.tag) in HEAD and local(el.tag) not in head:
            head[local(el.tag)] = el
            continue
        elif len(stack) > 2 and not in_body and local(stack[2].tag) in HEAD:
            continue  # inside a head element being read (a Reference's children)
        if stack:
            stack[-1].remove(el)  # done with it: nothing of it stays in memory
