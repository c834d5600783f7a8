"""The link stage: read every mirrored response not yet linked and record it on the set it answers.

Routing by answer type is the registry's (``responses/__init__.py``); each type links itself. Unknown,
unmatched or malformed responses stay in the inbox, are recorded with their kind, and are shown by
`status`; they never stop the relay. Notifications waiting for their ACRF are tried again when another
answer was linked in the same pass (their ACRF may be it), and at a process's first pass: never re-read at
every poll for nothing (a large notification whose ACRF never comes would be parsed for ever).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import structlog

from onss_relay.errors import InvalidName, JournalError
from onss_relay.journal import Journal, ResponseRow
from onss_relay.names import Prefix, parse_name
from onss_relay.responses import answer_type, link_order
from onss_relay.responses.reading import ResponseParseError, open_response, root_name

log = structlog.get_logger(__name__)


LINK_PAGE = 500  # responses read from the journal at a time: linking any number holds one page
GROUP_SECONDS = 0.5  # answers linked in one transaction for at most this long, then committed


def process_responses(journal: Journal, retry_waiting: bool = False, stop: threading.Event | None = None) -> list[str]:
    """Link every response not linked yet, a page at a time (ACRFs first within a page), then the waiting
    notifications when a set changed (or ``retry_waiting``); return the GO names of the sets that changed.
    With ``stop`` set, end between two pages: the rest are linked by the next pass."""
    changed: dict[str, None] = {}  # an ordered set
    first: int | None = None  # the first position read in this pass: answers past it began waiting in it
    after = 0
    while page := journal.unlinked_page(after, LINK_PAGE):
        first = page[0][0] if first is None else first
        after = page[-1][0]
        changed |= _link_group(journal, sorted((r for _, r in page), key=_order))
        if stop and stop.is_set():  # a stop ends the pass between pages, never before the first one: an answer
            break  # and its signature and marker, mirrored together, are linked together
    if (changed or retry_waiting) and not (stop and stop.is_set()):
        # those that began to wait in this pass were just read: not again (a large notification parsed twice);
        # positions only grow, so they are the ones at or past ``first``, and the pass holds one number, not a set
        after = 0
        while page := journal.waiting_page(after, LINK_PAGE, before=first):
            after = page[-1][0]
            changed |= _link_group(journal, sorted((r for _, r in page), key=_order))
    return list(changed)  # their results/ files follow from the journal (results.ResultsWriter)


def _link_group(journal: Journal, responses: list[ResponseRow]) -> dict[str, None]:
    """Given responses in link order, link them in few transactions (one commit per GROUP_SECONDS, not one per answer), each
    in its own savepoint: its link and its effect on its set stay together, and a damaged one is set aside
    with its reason without undoing the others. Return the GO names of the sets that changed, in order."""
    changed: dict[str, None] = {}
    left = iter(responses)
    while resp := next(left, None):
        with journal.atomic():  # a group ends after GROUP_SECONDS: other writers never wait long for the lock
            until = time.monotonic() + GROUP_SECONDS
            changed |= dict.fromkeys(_process_one(journal, resp))
            while time.monotonic() < until and (resp := next(left, None)):
                changed |= dict.fromkeys(_process_one(journal, resp))
    return changed


def _order(resp: ResponseRow) -> tuple[int, str]:
    try:
        app = parse_name(resp.name).app
    except InvalidName:
        app = ""
    return (link_order(app), resp.name)


def _process_one(journal: Journal, resp: ResponseRow) -> list[str]:
    """Given a mirrored response, link it; whatever its bytes, it never stops the others: a damaged one is
    kept in the inbox and recorded as malformed with the reason (status lists it). Only a journal that
    cannot be written stops the pass (a local problem, tried again at the next one)."""
    try:
        with journal.savepoint():  # a failure undoes this answer's writes only
            return _link_one(journal, resp)
    except JournalError:
        raise
    except (ResponseParseError, OSError) as e:
        why = str(e)
    except Exception as e:  # a damage no parser foresaw: say it loudly, keep the file, go on with the others
        log.exception("response_link_crashed", file=resp.name, error=repr(e))
        why = f"cannot be read ({type(e).__name__}: {e})"
    journal.link_response(resp.folder, resp.name, "malformed", None, detail=why)
    log.error("response_unreadable", file=resp.name, path=resp.local_path, detail=why)
    return []


def _link_one(journal: Journal, resp: ResponseRow) -> list[str]:
    """Given a mirrored response, route it to its answer type and link it; raise what stops reading it."""
    try:
        name = parse_name(resp.name)  # the poller only takes names that parse; this guards old journals
    except InvalidName as e:
        journal.link_response(resp.folder, resp.name, "malformed", None, detail=str(e))
        return []
    if name.prefix in (Prefix.FS, Prefix.GO):
        journal.link_response(resp.folder, resp.name, "signature" if name.prefix == Prefix.FS else "marker", None)
        return []
    path = Path(resp.local_path)
    compressed = name.prefix == Prefix.CO
    if path.exists() and path.stat().st_size == 0:
        raise ResponseParseError("empty file")
    kind = answer_type(name.app, lambda: _root(path, compressed))
    with open_response(path, compressed) as source:
        return kind.link(journal, resp, source)


def _root(path: Path, compressed: bool) -> str | None:
    try:
        with open_response(path, compressed) as source:
            return root_name(source)
    except (ResponseParseError, OSError):
        return None
