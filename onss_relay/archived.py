"""Where a sent set's archived files are in THIS spool: the journal keeps the absolute sent/YYYY-MM-DD folder it
moved them to, and a spool moved to another mount point, copied, restored, or seen from a container (/spool vs
the host's path) keeps those old paths. Retention and `status NAME` both read a set's files through here."""

from __future__ import annotations

from pathlib import Path

from onss_relay.journal import SetRow


def archived_day(sent: Path, row: SetRow) -> Path | None:
    """Given the spool's sent/ folder and a set, return its sent/YYYY-MM-DD folder in that spool (the journal's
    folder re-rooted), or None when the set was never archived."""
    if not row.data.sent_dir:
        return None
    return sent / Path(row.data.sent_dir).name


def archived_files(sent: Path, row: SetRow) -> list[Path]:
    """Given the spool's sent/ folder and a set, return the paths its FI parts, extras, FS and GO were archived
    to in that spool (empty when it was never archived); the GO is last."""
    day = archived_day(sent, row)
    if day is None:
        return []
    return [day / Path(n).name for n in [*row.parts, *row.data.extras, *row.data.fs, row.go_name]]
