"""What the ONSS answers, one module per answer type, and the registry that routes a response to its type.

A new answer type is one module (a ``link(journal, response, stream)`` function, parsing included, that
stores an ``AnswerRecord`` of its kind on the set; ``status_line`` and ``results_entry`` render that record)
and one line in ``ANSWER_TYPES``: status NAME and results/<GO>.json find the rendering here by kind. A response is routed by its application code, else by its root element; anything
else goes to ``other`` (kept, linked when a ticket matches). Types are linked in this order, so that in one
pass an ACRF is recorded before the notification that follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import IO, Any

from onss_relay.journal import AnswerRecord, Journal, ResponseRow
from onss_relay.responses import acrf, declaration_answer, notification, other

Linker = Callable[[Journal, ResponseRow, IO[bytes]], list[str]]


def _plain_line(a: AnswerRecord) -> str:
    return f"{a.kind} {a.name}: {a.file}"


def _plain_entry(a: AnswerRecord) -> dict[str, Any]:
    return {"type": a.kind, "name": a.name, "file": a.file, **a.fields}


@dataclasses.dataclass(frozen=True)
class AnswerType:
    kind: str
    app_codes: frozenset[str]  # file-name application codes (FO.ACRF…)
    roots: frozenset[str]  # root element local names
    link: Linker
    status_line: Callable[[AnswerRecord], str] = _plain_line  # its stored record in status NAME
    results_entry: Callable[[AnswerRecord], dict[str, Any]] = _plain_entry  # and in results/<GO>.json


ANSWER_TYPES = [
    AnswerType("acrf", frozenset({"ACRF"}), frozenset({"ACRF"}), acrf.link),
    AnswerType("notification", frozenset({"NOTI"}), frozenset({"NOTIFICATION"}), notification.link),
    AnswerType(
        "declaration_answer",
        frozenset(),
        frozenset({"DmfAUpdateNotification", "DmfAPID"}),
        declaration_answer.link,
        declaration_answer.status_line,
        declaration_answer.results_entry,
    ),
]
OTHER = AnswerType("other", frozenset(), frozenset(), other.link)


def answer_type(app: str, root: Callable[[], str | None] = lambda: None) -> AnswerType:
    """Given a response's application code (and a way to read its root element name), return its answer type."""
    for t in ANSWER_TYPES:
        if app in t.app_codes:
            return t
    name = root()
    return next((t for t in ANSWER_TYPES if name in t.roots), OTHER)


def rendering(kind: str) -> AnswerType:
    """Given the kind of a stored answer record, return its answer type (whose functions render it)."""
    return next((t for t in ANSWER_TYPES if t.kind == kind), OTHER)


def link_order(app: str) -> int:
    """Given an application code, return its rank in the linking order (ACRF first, other answers last)."""
    return next((i for i, t in enumerate(ANSWER_TYPES) if app in t.app_codes), len(ANSWER_TYPES))
