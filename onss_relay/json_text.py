"""``dumps_indented``: the bytes ``json.dumps(doc, indent=2)`` gives, made faster for the results files.

``json.dumps`` with an indent runs the standard library's pure-Python encoder (a generator per nested value):
~70 µs per results file, a third of writing it, serial at the end of ``send --once``. Here the same text is
built by one recursive function, each string still escaped by the C escaper ``json.dumps`` uses; anything it
does not know (a type ``json.dumps`` would turn down, a float key, a cycle too deep) goes to ``json.dumps``
itself, so the text, and every error, stay exactly the standard library's (tests/test_json_text.py compares).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

_INFINITY = float("inf")
_DEPTH = 100  # nesting beyond this is left to json.dumps (its own recursion and cycle checks)


class _Unknown(Exception):
    """A value this encoder leaves to json.dumps."""


def dumps_indented(doc: Any) -> str:
    """Given a JSON-ready value, return ``json.dumps(doc, indent=2)``, the same text, built faster."""
    out: list[str] = []
    try:
        _value(doc, "\n", out, 0)
    except _Unknown:
        return json.dumps(doc, indent=2)
    return "".join(out)


def _scalar(o: Any) -> str:
    """Given a value that is no container, return its JSON text as json.dumps writes it; raise _Unknown for a
    value json.dumps does not take as it is (its error, or a subclass's own text, stays json.dumps's)."""
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    kind = type(o)
    if kind is str:
        return encode_basestring_ascii(o)
    if kind is int:
        return int.__repr__(o)
    if kind is float:
        if o != o or o == _INFINITY or o == -_INFINITY:
            raise _Unknown  # NaN, Infinity: json.dumps's own spelling
        return float.__repr__(o)
    raise _Unknown


def _value(o: Any, newline: str, out: list[str], depth: int) -> None:
    """Given a value, the newline and indent of its line, the text so far and how deep it is, add its text."""
    kind = type(o)
    if kind is dict:
        _object(o, newline, out, depth)
    elif kind is list or kind is tuple:
        _array(o, newline, out, depth)
    else:
        out.append(_scalar(o))


def _object(o: dict[Any, Any], newline: str, out: list[str], depth: int) -> None:
    """Given a dict, the newline and indent of its line, the text so far and how deep it is, add its text."""
    if not o:
        out.append("{}")
        return
    if depth >= _DEPTH:
        raise _Unknown
    inner = newline + "  "
    sep = "{" + inner
    for key, item in o.items():
        if type(key) is not str:
            raise _Unknown  # keys json.dumps converts (numbers, booleans, None) or turns down
        _item(sep + encode_basestring_ascii(key) + ": ", item, inner, out, depth)
        sep = "," + inner
    out.append(newline + "}")


def _array(o: list[Any] | tuple[Any, ...], newline: str, out: list[str], depth: int) -> None:
    """Given a list, the newline and indent of its line, the text so far and how deep it is, add its text."""
    if not o:
        out.append("[]")
        return
    if depth >= _DEPTH:
        raise _Unknown
    inner = newline + "  "
    sep = "[" + inner
    for item in o:
        _item(sep, item, inner, out, depth)
        sep = "," + inner
    out.append(newline + "]")


def _item(lead: str, item: Any, inner: str, out: list[str], depth: int) -> None:
    """Given what comes before a container's item on its line (the separator, a key), the item, the newline and
    indent of its line, the text so far and the container's depth, add the item's text."""
    kind = type(item)
    if kind is str:
        out.append(lead + encode_basestring_ascii(item))
    elif kind is dict or kind is list or kind is tuple:
        out.append(lead)
        _value(item, inner, out, depth + 1)
    else:
        out.append(lead + _scalar(item))
