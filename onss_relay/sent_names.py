"""Which sequences sets archived in sent/ have used: what the claim stage consults when the journal does not know
a name (lost, or restored from an old backup), so that a sequence is never sent twice (ACRF-133).

Reads only; sent/ is looked at once per look (``look_again``: the claim looks again per page, its journal reads are
per page too). A day's folder is listed in full once, with an inotify watch on it added first (folder_events.py):
from then on the names added to it come from its events, read at each look, and it is listed again only when a name
went away, it was moved or deleted, or events were lost. A day's folder grows by thousands while a large outbox is
claimed and sent: listed again at each page of 200 sets, it cost the claiming process a listing of ~15,000 names
per page at 10,000 sets (0.84 s of its CPU), and 150,000 at 100,000. Where inotify cannot be used, a folder is
listed again at each look when its mtime changed, and only the names not seen before are parsed.

A set this relay archives meanwhile is in the journal, which the claim asks first: sent/ is the memory of sets the
journal does not know (it was lost, or restored from an older backup), which are there before the look. A GO put
back into sent/ by hand is known to neither the journal nor any earlier listing, and it alone stops a set reusing
its sequence: its event is queued before the call that put it there returns, so it is seen at the next look (a
pause of 200 times a listing's duration let one through: sent twice, ACRF-133).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import os
import time
from pathlib import Path

from onss_relay.errors import InvalidName
from onss_relay.folder_events import FolderEvents
from onss_relay.names import Name, parse_name

SequenceKey = tuple[str, str, str, str]  # sender, date, sequence, environment
KEEP_UNASKED = 3600.0  # seconds a day folder's names are kept while no set asks about it


def sequence_key(name: Name) -> SequenceKey:
    """Given a parsed name, return what the transfer point allows once: sender, date, sequence, environment."""
    return (name.sender, name.date, name.seq, name.env.value)


@dataclasses.dataclass
class _Folder:
    mtime: int
    names: set[str]  # every entry seen at that mtime (a folder listed at each look only)
    sequences: dict[SequenceKey, str]  # the GO files among them, by the sequence they used
    asked: float = 0.0  # time.monotonic() of the last look that asked this folder
    watched: bool = False  # listed with a watch on it: names added since come from its events
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder the path named when it was listed


class SentNames:
    """Given the sent/ folder, tell which GO file there used a sequence (kept per folder, by its mtime)."""

    def __init__(self, sent: Path) -> None:
        self.sent = sent
        self._folders: dict[Path, _Folder] = {}
        self._days: list[str] | None = None  # sent/'s day folders in this look (None: not listed yet)
        self._day_paths: list[Path] = []  # their paths, in the same order
        self._looked: set[Path] = set()  # day folders whose mtime was checked in this look
        self._now = time.monotonic()  # when this look began
        self._events = FolderEvents(prefix="GO.")
        self._events_read = False  # in this look

    def look_again(self) -> None:
        """From now on, list sent/ and check its day folders' mtimes again (once each until the next call)."""
        self._days = None
        self._looked.clear()
        self._events_read = False
        self._now = time.monotonic()
        # a daemon's claim lives for months and sent/ keeps every day: forget the folders no set asked about for
        # KEEP_UNASKED seconds (read again, in full, if one asks later), not a day's thousands of names for good
        forgotten = [f for f, c in self._folders.items() if self._now - c.asked > KEEP_UNASKED]
        for folder in forgotten:
            del self._folders[folder]
            self._events.unwatch(folder)

    def close(self) -> None:
        """Stop watching sent/'s day folders (garbage collection does it too)."""
        self._events.close()

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
            self._day_paths = [self.sent / d for d in self._days]
        return self._day_paths[bisect.bisect_left(self._days, since) :]

    def _listing(self, folder: Path) -> dict[SequenceKey, str]:
        """Given a day's folder, return its GO files by sequence: the names its events added since it was listed,
        or, not watched, listed again when its mtime changed, parsing only the names added since (all of them again
        when one went away)."""
        cached = self._folders.get(folder)
        if cached is not None and folder in self._looked:
            return cached.sequences
        self._read_events()
        cached = self._folders.get(folder)
        if cached is not None:
            cached.asked = self._now
            if cached.watched and self._events.watching(folder):
                if _identity(folder) == cached.identity:
                    self._looked.add(folder)
                    return cached.sequences
                # the path names another folder now: sent/ or the spool moved aside and restored from a backup (an
                # ancestor's rename is no event of the watched folder's), a symlink retargeted; its watch is on the
                # folder that went, and the one there now (GOs put back by hand: ACRF-133) is watched and listed
                self._events.unwatch(folder)
        before = _identity(folder)
        watched = self._events.watch(folder)  # before the listing: a name added meanwhile is in one or both
        try:
            st = folder.stat()
            mtime = st.st_mtime_ns
            if cached is not None and not cached.watched and cached.mtime == mtime:
                self._looked.add(folder)
                return cached.sequences
            names = set(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):  # gone since sent/ was listed, or a file with a day's name
            self._events.unwatch(folder)
            return {}
        except OSError:
            # any other error (a folder the relay's user cannot read, an I/O error) goes up, naming the folder: read
            # as empty, the sequences it holds would be sent a second time (ACRF-133); the claim fails until fixed
            self._events.unwatch(folder)
            raise
        # the watch is on the folder listed only if the path named that one folder from before the watch was added
        # to after the listing (else listed again, with a new watch, at the next look that asks)
        watched = watched and before == (st.st_dev, st.st_ino) == _identity(folder)
        if cached is None or cached.watched or not cached.names <= names:
            cached = _Folder(mtime, set(), {})
        for entry in names - cached.names:
            _add(cached.sequences, entry)
        cached.mtime, cached.asked, cached.watched = mtime, self._now, watched
        cached.identity = (st.st_dev, st.st_ino)
        cached.names = set() if watched else names
        self._folders[folder] = cached
        self._looked.add(folder)
        return cached.sequences

    def _read_events(self) -> None:
        """Once per look: add the GO names the watched folders' events added; forget the folders to list again."""
        if self._events_read:
            return
        self._events_read = True
        added, stale = self._events.changes()
        for folder in stale:
            self._folders.pop(folder, None)
            self._events.unwatch(folder)  # watched again when a set asks, before it is listed; or never, if none
        for folder, entries in added.items():
            cached = self._folders.get(folder)
            if cached is not None and cached.watched:
                for entry in entries:
                    _add(cached.sequences, entry)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Given a folder's path, return (st_dev, st_ino) of what it names now (following symlinks), None if nothing."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _add(sequences: dict[SequenceKey, str], entry: str) -> None:
    """Given a folder's GO files by sequence and a name in it, add the name if it is a GO file's."""
    if not entry.startswith("GO."):
        return
    try:
        n = parse_name(entry)
    except InvalidName:
        return
    sequences.setdefault(sequence_key(n), entry)
