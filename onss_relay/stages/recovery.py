"""Reading the server to finish a set whose last puts are in doubt: one in go_sending (after a crash, or after
a connection given up), and an uncertain one caught while its FI or FS were put, once its quiet period is over.

Reads only: the upload stage (upload.py) does the puts this module says are needed.
"""

from __future__ import annotations

import io

import structlog

from onss_relay.errors import RemoteFileGone
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import Env, Prefix, response_folder, upload_folder
from onss_relay.responses.acrf import names_answered
from onss_relay.stages.poll import validate_remote_entry
from onss_relay.transport.base import Transport

log = structlog.get_logger(__name__)


def go_not_needed(t: Transport, row: SetRow, max_size: int) -> str | None:
    """Given a set in go_sending and a connection, return why its GO must not be put (the GO is on the server,
    the transfer point consumed the set, or an ACRF in OUT answers it), or None when the GO is to be put."""
    folder = upload_folder(Env(row.env))
    if t.exists(folder, row.go_name):
        return "GO already on the server"
    if not all(t.exists(folder, fi) for fi in row.parts):
        return "set already consumed by the transfer point"
    answer = answer_waiting(t, row, max_size)
    if answer is not None:
        return f"GO consumed: {answer} answers the set"
    return None


def answer_waiting(t: Transport, row: SetRow, max_size: int) -> str | None:
    """Given a set in go_sending, return the name of an ACRF waiting in its environment's OUT folder that
    answers it (the GO was consumed, whatever is left in IN), else None."""
    out = response_folder(Env(row.env))
    ours = {row.go_name, *row.parts}
    for entry in t.list(out):
        name = validate_remote_entry(entry)  # hostile names and kinds: the poller reports them
        if isinstance(name, str) or name.app != "ACRF" or name.prefix not in (Prefix.FO, Prefix.CO):
            continue
        if entry.size > max_size:
            continue
        data = io.BytesIO()
        try:
            t.get(out, entry.name, data, max_size)
        except RemoteFileGone:  # the poller took it meanwhile: it will link it; this look goes on
            continue
        if names_answered(data.getvalue(), compressed=name.prefix == Prefix.CO) & ours:
            return f"{out}/{entry.name}"
    return None


def decide_uploading(t: Transport, journal: Journal, row: SetRow) -> SetRow:
    """Given a set left uncertain while its FI or FS were put, its quiet period over, read the server and
    return the set as it is to be finished: unchanged (it is sent again whole from its FI: nothing of the
    earlier puts can arrive any more), or, should a GO of it be there already, moved to go_sending (its FI
    and FS are then never put again)."""
    folder = upload_folder(Env(row.env))
    on_server = {n: t.size(folder, n) for n in (*row.parts, *row.data.fs, row.go_name)}
    log.info("set_decided", set=row.go_name, state=str(row.state), on_server=on_server)
    if on_server[row.go_name] is None:
        return row
    journal.transition(row.go_name, State.GO_SENDING, "its GO found on the server after the quiet period")
    updated = journal.get_set(row.go_name)
    assert updated is not None
    return updated
