"""One pass over the outbox, streamed: every file's settle state fed to the tracker, files that are no
declaration quarantined with a reason, and the rest indexed by set as bare names (no stat results, paths or
parsed names kept), so that a scan's memory is a few dozen bytes per file however full the outbox is.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from onss_relay.errors import InvalidName
from onss_relay.names import Prefix, parse_name, set_key
from onss_relay.spool import Spool, is_temp_name
from onss_relay.stages.settle import SettleTracker


@dataclasses.dataclass
class OutboxIndex:
    """The outbox as one scan saw it: each set's file names (by GO name), the sets with a file not settled yet,
    and every name present (declaration or not: what the tracker and the unrecorded claims keep)."""

    sets: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    unsettled: set[str] = dataclasses.field(default_factory=set)
    present: set[str] = dataclasses.field(default_factory=set)

    def pages(self, size: int) -> Iterator[list[str]]:
        """Given a page size, yield the sets' GO names in sorted order, size at a time."""
        keys = sorted(self.sets)
        for start in range(0, len(keys), size):
            yield keys[start : start + size]


def index_outbox(spool: Spool, tracker: SettleTracker) -> OutboxIndex:
    """Given the spool and the settle tracker, read the outbox once (streamed), feed each regular file's size
    and mtime to the tracker, quarantine what is no declaration (once settled) and return the sets' index;
    temporary names are left alone."""
    index = OutboxIndex()
    try:
        it = os.scandir(spool.outbox)
    except FileNotFoundError:
        return index
    with it:
        for entry in it:
            if is_temp_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                _add(index, spool, entry.name, tracker.settled(entry.name, st))
            elif not stat.S_ISDIR(st.st_mode):
                refuse_odd(spool, Path(entry.path), st)
    return index


def _add(index: OutboxIndex, spool: Spool, name: str, settled: bool) -> None:
    """Given the index, a regular file's name and whether it is settled, index it under its set, or quarantine
    it (once settled) when its name is no declaration file a sender sends."""
    index.present.add(name)
    try:
        parsed = parse_name(name)
    except InvalidName as e:
        if settled:
            spool.quarantine([spool.outbox / name], "not a valid declaration file name", str(e))
        return
    if parsed.prefix not in (Prefix.FI, Prefix.FS, Prefix.GO):
        if settled:
            detail = f"{name}: prefix {parsed.prefix} is not sent by senders"
            spool.quarantine([spool.outbox / name], "not a declaration file", detail)
        return
    key = set_key(parsed)
    index.sets.setdefault(key, []).append(name)
    if not settled:
        index.unsettled.add(key)


def refuse_odd(spool: Spool, path: Path, st: os.stat_result) -> None:
    """Given an outbox entry that is not a regular file, quarantine it with why (never silently skipped).

    A symbolic link is not followed: it may point at any file the relay can read (its key, another
    payroll's data) and its target may change after it is signed; the link itself goes to failed/."""
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        reason = "a symbolic link, not a file"
        detail = (
            f"{path.name} is a symbolic link to {target}: the relay sends only regular files put in the "
            "outbox (a link may point at any file the relay can read, and its target can change); "
            "copy or move the file itself into the outbox"
        )
    else:
        reason = "not a regular file"
        detail = f"{path.name} is a pipe, socket or device, not a declaration file"
    spool.quarantine([path], reason, detail)
