"""The same declaration twice: a set whose FI bytes equal those of a set claimed in the last
`watch.duplicate_content_days` days (people drop or submit a file again when unsure the first left) is
quarantined naming the earlier set, unless `requeue --force` said it is meant to go again."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from onss_relay.journal import Journal, SetRow, State
from onss_relay.local_time import local_time
from onss_relay.names import parse_name
from onss_relay.part_bytes import open_part, part_size

CHUNK = 1 << 20
CONTENT_KEY = "content"  # the set_keys kind holding a set's content digest


def content_digest(parts: list[Path]) -> str:
    """Given a set's FI files in part order, return "sha256:<hex>" over each part's size and bytes."""
    h = hashlib.sha256()
    for path in parts:
        with open_part(path) as f:
            h.update(f"{part_size(path)}:".encode())
            while chunk := f.read(CHUNK):
                h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def earlier_with(journal: Journal, content: str, days: int, go_name: str) -> SetRow | None:
    """Given a content digest, return a set other than ``go_name``, claimed in the last ``days`` days and not
    quarantined, with that content, or None. Sets are found by their ``content`` key (recorded at claim)."""
    since = time.time() - days * 86400
    env = parse_name(go_name).env.value
    for row in journal.sets_by_key(CONTENT_KEY, content):
        fresh = row.created_at >= since and row.state != State.FAILED
        # the same file tested in T or S and then sent in R is the ONSS's own workflow, not a duplicate
        if fresh and row.go_name != go_name and row.env == env:
            return row
    return None


def same_content_detail(go_name: str, earlier: str, state: str, claimed_at: float | None) -> str:
    """Given a set and the earlier one with its content, return the quarantine detail."""
    when = f", claimed {local_time(claimed_at)}" if claimed_at else ""
    return (
        f"{go_name} has the same content, byte for byte, as {earlier} ({state}{when}); if it is meant to be sent"
        f" again: onss-relay requeue --force {go_name}"
    )
