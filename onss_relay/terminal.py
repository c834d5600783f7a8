"""Text for a terminal: names and reasons come from files and from the server, and a control character in
one (an escape sequence in a file name) must be shown, never obeyed. One helper for every text output."""

from __future__ import annotations

import unicodedata

KEPT = "\n\t"  # the layout of the text itself


def for_terminal(text: str) -> str:
    """Given text for a terminal, return it with every control or format character but newline and tab written
    as its escape (``\\x1b``, ``\\u202e``): the terminal shows it instead of obeying it."""
    if text.isprintable():
        return text
    return "".join(c if c in KEPT or c.isprintable() or not _control(c) else _escaped(c) for c in text)


def _control(c: str) -> bool:
    """Given a character, return True when a terminal may act on it (a control, format or separator code)."""
    return unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn")


def _escaped(c: str) -> str:
    """Given a character, return its Python escape (``\\x1b``, ``\\u202e``)."""
    return c.encode("unicode_escape").decode("ascii")
