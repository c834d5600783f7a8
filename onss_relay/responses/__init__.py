"""What the ONSS answers, one module per answer type, and the registry that routes a response to its type.

A new answer type is one module (a ``link(journal, response, stream)`` function, parsing included) and one
line in ``ANSWER_TYPES``. A response is routed by its application code, else by its root element; anything
else goes to ``other`` (kept, linked when a ticket matches). Types are linked in this order, so that in one
pass an ACRF is recorded before the notification that follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import IO

from onss_relay.journal import Journal, ResponseRow
from onss_relay.responses import acrf, notification, other

Linker = Callable[[Journal, ResponseRow, IO[bytes]], list[str]]


@dataclasses.dataclass(frozen=True)
class AnswerType:
    kind: str
    app_codes: frozenset[str]  # file-name application codes (FO.ACRF…)
    roots: frozenset[str]  # root element local names
    link: Linker


ANSWER_TYPES = (
    AnswerType("acrf", frozenset({"ACRF"}), frozenset({"ACRF"}), acrf.link),
    AnswerType("notification", frozenset({"NOTI"}), frozenset({"NOTIFICATION"}), notification.link),
)
OTHER = AnswerType("other", frozenset(), frozenset(), other.link)


def answer_type(app: str, root: Callable[[], str | None] = lambda: None) -> AnswerType:
    """Given a response's application code (and a way to read its root element name), return its answer type."""
    for t in ANSWER_TYPES:
        if app in t.app_codes:
            return t
    name = root()
    return next((t for t in ANSWER_TYPES if name in t.roots), OTHER)


def link_order(app: str) -> int:
    """Given an application code, return its rank in the linking order (ACRF first, other answers last)."""
    return next((i for i, t in enumerate(ANSWER_TYPES) if app in t.app_codes), len(ANSWER_TYPES))
