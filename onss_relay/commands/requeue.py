"""`onss-relay requeue NAME`: put a quarantined set back in the outbox, all its files at once, to be sent again.

Putting parts back by hand, one at a time, re-quarantines them (the first part alone is an incomplete set,
and older than watch.incomplete_after) and leaves stale reason files beside nothing. Here every file of the
set moves from failed/ to the outbox under a temporary name, is dated now, and is renamed in together;
the reason files go once the files are back. The claim stage then checks the set like a new one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from onss_relay.config import Config
from onss_relay.durable import fsync_dir, move_durably
from onss_relay.errors import InvalidName, UsageError
from onss_relay.names import parse_name, set_key
from onss_relay.spool import Spool


def requeue(cfg: Config, name: str, out: TextIO) -> int:
    """Given a GO, FI or FS name of a quarantined set, move its files back into the outbox; return 0."""
    try:
        key = set_key(parse_name(Path(name).name))
    except InvalidName as e:
        raise UsageError(f"{name}: not a declaration file or set name ({e.field} {e.why})") from None
    spool = Spool(cfg.paths)
    files = sorted(p for p in spool.failed.iterdir() if _belongs(p.name, key))
    if not files:
        raise UsageError(f"{name}: nothing of set {key} is in {spool.failed}")
    staged = []
    for f in files:
        temp = move_durably(f, spool.outbox, f".{f.name}.requeue.tmp")
        os.utime(temp)  # watch.incomplete_after counts from now, not from the first attempt
        staged.append((temp, spool.outbox / f.name))
    for temp, final in staged:
        os.replace(temp, final)
    fsync_dir(spool.outbox)
    for f in files:
        (f.parent / f"{f.name}.reason.json").unlink(missing_ok=True)
    fsync_dir(spool.failed)
    print(f"requeued {key}: {', '.join(final.name for _, final in staged)} back in {spool.outbox}", file=out)
    return 0


def _belongs(file_name: str, key: str) -> bool:
    if file_name.endswith(".reason.json"):
        return False
    try:
        return set_key(parse_name(file_name)) == key
    except InvalidName:
        return False
