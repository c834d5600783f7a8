"""Which sequences sets archived in sent/ have used: what the claim stage consults when the journal does not know
a name (lost, or restored from an old backup), so that a sequence is never sent twice (ACRF-133).

Reads only; sent/ is looked at once per look (``look_again``: the claim looks again per page, its journal reads are
per page too), each sent/YYYY-MM-DD folder listed again only when its mtime changed, and then only the names not
seen before are parsed (a day's folder grows by thousands while a large outbox is claimed and sent). A set this
relay archives meanwhile is in the journal, which the claim asks first: sent/ is the memory of sets the journal
does not know (it was lost, or restored from an older backup), which are there before the look.

A changed day folder is listed again at the next look, never after a pause: a GO put back into sent/ by hand is
known to neither the journal nor any earlier listing, and it alone stops a set reusing its sequence (a pause of 200
times a listing's duration let one through: sent twice, ACRF-133).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import os
import time
from pathlib import Path

from onss_relay.errors import InvalidName
from onss_relay.names import Name, parse_name

SequenceKey = tuple[str, str, str, str]  # sender, date, sequence, environment
KEEP_UNASKED = 3600.0  # seconds a day folder's names are kept while no set asks about it


def sequence_key(name: Name) -> SequenceKey:
    """Given a parsed name, return what the transfer point allows once: sender, date, sequence, environment."""
    return (name.sender, name.date, name.seq, name.env.value)


@dataclasses.dataclass
class _Folder:
    mtime: int
    names: set[str]  # every entry seen at that mtime
    sequences: dict[SequenceKey, str]  # the GO files among them, by the sequence they used
    asked: float = 0.0  # time.monotonic() of the last look that asked this folder


class SentNames:
    """Given the sent/ folder, tell which GO file there used a sequence (kept per folder, by its mtime)."""

    def __init__(self, sent: Path) -> None:
        self.sent = sent
        self._folders: dict[Path, _Folder] = {}
        self._days: list[str] | None = None  # sent/'s day folders in this look (None: not listed yet)
        self._looked: set[Path] = set()  # day folders whose mtime was checked in this look
        self._now = time.monotonic()  # when this look began

    def look_again(self) -> None:
        """From now on, list sent/ and check its day folders' mtimes again (once each until the next call)."""
        self._days = None
        self._looked.clear()
        self._now = time.monotonic()
        # a daemon's claim lives for months and sent/ keeps every day: forget the folders no set asked about for
        # KEEP_UNASKED seconds (read again, in full, if one asks later), not a day's thousands of names for good
        forgotten = [f for f, c in self._folders.items() if self._now - c.asked > KEEP_UNASKED]
        for folder in forgotten:
            del self._folders[folder]

    def sent_with(self, name: Name) -> Path | None:
        """Given a set's name, return the GO file in sent/ of a set that used its sequence, or None. Files dated
        D are archived on day D or later, so only those folders are read."""
        since = (name.creation_date - dt.timedelta(days=1)).isoformat()
        key = sequence_key(name)
        for folder in self._day_folders(since):
            go = self._listing(folder).get(key)
            if go is not None:
                return folder / go
        return None

    def _day_folders(self, since: str) -> list[Path]:
        if self._days is None:
            try:
                self._days = sorted(d for d in os.listdir(self.sent) if len(d) == 10)
            except FileNotFoundError:
                self._days = []
        return [self.sent / d for d in self._days[bisect.bisect_left(self._days, since) :]]

    def _listing(self, folder: Path) -> dict[SequenceKey, str]:
        """Given a day's folder, return its GO files by sequence: listed again when its mtime changed, parsing
        only the names added since (all of them again when one went away)."""
        cached = self._folders.get(folder)
        if cached is not None and folder in self._looked:
            return cached.sequences
        if cached is not None:
            cached.asked = self._now
        try:
            mtime = folder.stat().st_mtime_ns
            if cached is not None and cached.mtime == mtime:
                self._looked.add(folder)
                return cached.sequences
            names = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):  # gone since sent/ was listed, or a file with a day's name
            return {}
        # any other error (a folder the relay's user cannot read, an I/O error) goes up, naming the folder: read as
        # empty, the sequences it holds would be sent a second time (ACRF-133); the claim fails until it is fixed
        if cached is None or not cached.names <= names:
            cached = _Folder(mtime, set(), {})
        for entry in names - cached.names:
            if not entry.startswith("GO."):
                continue
            try:
                n = parse_name(entry)
            except InvalidName:
                continue
            cached.sequences.setdefault(sequence_key(n), entry)
        cached.mtime, cached.names, cached.asked = mtime, names, self._now
        self._folders[folder] = cached
        self._looked.add(folder)
        return cached.sequences
