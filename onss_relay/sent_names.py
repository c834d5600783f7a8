"""Which sequences sets archived in sent/ have used: what the claim stage consults when the journal does not know
a name (lost, or restored from an old backup), so that a sequence is never sent twice (ACRF-133).

Reads only; each sent/YYYY-MM-DD folder is listed again only when its mtime changed, and then only the names not
seen before are parsed (a day's folder grows by thousands while a large outbox is claimed and sent).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

from onss_relay.errors import InvalidName
from onss_relay.names import Name, parse_name

SequenceKey = tuple[str, str, str, str]  # sender, date, sequence, environment


def sequence_key(name: Name) -> SequenceKey:
    """Given a parsed name, return what the transfer point allows once: sender, date, sequence, environment."""
    return (name.sender, name.date, name.seq, name.env.value)


@dataclasses.dataclass
class _Folder:
    mtime: int
    names: set[str]  # every entry seen at that mtime
    sequences: dict[SequenceKey, str]  # the GO files among them, by the sequence they used


class SentNames:
    """Given the sent/ folder, tell which GO file there used a sequence (kept per folder, by its mtime)."""

    def __init__(self, sent: Path) -> None:
        self.sent = sent
        self._folders: dict[Path, _Folder] = {}

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
        try:
            names = os.listdir(self.sent)
        except FileNotFoundError:
            return []
        return [self.sent / d for d in sorted(names) if len(d) == 10 and d >= since]

    def _listing(self, folder: Path) -> dict[SequenceKey, str]:
        """Given a day's folder, return its GO files by sequence: listed again when its mtime changed, parsing
        only the names added since (all of them again when one went away)."""
        try:
            mtime = folder.stat().st_mtime_ns
            cached = self._folders.get(folder)
            if cached is not None and cached.mtime == mtime:
                return cached.sequences
            names = set(os.listdir(folder))
        except OSError:
            return {}
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
        cached.mtime, cached.names = mtime, names
        self._folders[folder] = cached
        return cached.sequences
