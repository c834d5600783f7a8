"""After `restore`: sets the backup saw pending (queued, signed, uploading, go_sending) whose GO is in sent/ were sent
after the backup was taken. sent/ holds a set's files only once its GO went out, so the set is recorded sent
(with a detail that says how it was found) instead of meeting its missing work files at the next upload and being
set aside as "nothing was sent"."""

from __future__ import annotations

from contextlib import closing

from onss_relay.journal import Change, DataChange, Journal, State
from onss_relay.names import parse_name
from onss_relay.sent_names import SentNames
from onss_relay.spool import Spool

RESTORED_PENDING = (State.QUEUED, State.SIGNED, State.UPLOADING, State.GO_SENDING)
STEPS = {
    State.QUEUED: (State.SIGNED, State.UPLOADING, State.GO_SENDING),
    State.SIGNED: (State.UPLOADING, State.GO_SENDING),
    State.UPLOADING: (State.GO_SENDING,),
}


def record_sent_found_in_sent(journal: Journal, spool: Spool) -> list[str]:
    """Given a journal just restored and its spool, record as sent each pending set whose GO file is in sent/
    (through the states it skipped, in one commit); return their GO names."""
    with closing(SentNames(spool.sent)) as sent:  # its inotify instance (folder_events.py) freed at once
        changes: list[Change] = []
        found = []
        for row in journal.sets_in(*RESTORED_PENDING):
            go = sent.sent_with(parse_name(row.go_name))
            if go is None or go.name != row.go_name:
                continue
            detail = f"found in {go.parent} after a restore: sent after the backup was taken"
            fs = tuple("FS" + part[2:] for part in row.parts)  # what signing named them (queued: not recorded yet)
            changes += [
                Change(row.go_name, step, detail, data=DataChange(fs=fs) if step == State.SIGNED else DataChange())
                for step in STEPS.get(row.state, ())
            ]
            changes.append(
                Change(row.go_name, State.SENT, detail, archived=True, data=DataChange(sent_dir=str(go.parent)))
            )
            found.append(row.go_name)
    if changes:
        journal.transition_many(changes)
    return found
