"""The status page's Jinja2 templates, autoescaped: whatever came from a file or the server is shown as text."""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import Any

import jinja2

from onss_relay.responses.codes import result_code


@functools.cache
def environment() -> jinja2.Environment:
    """Return the template environment (autoescape on for every template, unknown names an error)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("onss_relay.status_page", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["result_meaning"] = lambda code: result_code(code).meaning if code else ""
    env.filters["words"] = lambda s: str(s or "").replace("_", " ")
    return env


def page(template: str, **values: Any) -> bytes:
    """Given a template name and its values, return the page as UTF-8 bytes."""
    return environment().get_template(template).render(**values).encode()


def when(at: float | str | None) -> str:
    """Given a POSIX or ISO time (or None), return it in this machine's local time, or "-"."""
    if at is None or at == "":
        return "-"
    moment = dt.datetime.fromisoformat(at) if isinstance(at, str) else dt.datetime.fromtimestamp(at, dt.UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(at: float | None) -> str:
    """Given a POSIX time (or None), return how long ago it was, in a few characters."""
    if not at:
        return "never"
    s = int(time.time() - at)
    return (
        f"{s} s" if s < 120 else f"{s // 60} min" if s < 7200 else f"{s // 3600} h" if s < 172800 else f"{s // 86400} d"
    )
