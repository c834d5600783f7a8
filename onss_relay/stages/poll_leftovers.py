"""What polls of older versions left in the inbox: their temp files were `inbox/<OUT folder>/.<name>.part`
(now `inbox/.downloading/<folder>/<name>`). Such a file was never renamed into place, so its answer was never
deleted from the server (deleted only after a durable local copy): removing it loses nothing, the next poll
downloads that answer again. Swept once per spool, since the sweep lists the inbox folders, every answer kept."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

from onss_relay.errors import InvalidName
from onss_relay.names import ALL_FOLDERS, parse_name

log = structlog.get_logger(__name__)

SWEPT = (
    ".old-part-files-swept"  # an empty folder in inbox/.downloading/: the one sweep was done (no file is left there)
)


def remove_old_part_files(inbox: Path, downloading: Path) -> list[Path]:
    """Given the inbox and its folder of downloads in progress, remove (once: a mark in that folder says it was
    done) the `.<answer name>.part` temp files older versions left in inbox/<OUT folder>/, and log how many;
    a file of another name (a person's hidden file) is left alone. Return the files removed."""
    mark = downloading / SWEPT
    if mark.exists():
        return []
    removed = [p for folder in ALL_FOLDERS if folder.startswith("OUT") for p in _old_temps(inbox / folder)]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        log.info(
            "old_downloads_removed",
            count=len(removed),
            files=[f"{p.parent.name}/{p.name}" for p in removed[:20]],
            detail="temp files of a poll of an older version, never renamed in: their answers are still on the "
            "server and are downloaded again",
        )
    with contextlib.suppress(OSError):
        mark.mkdir(parents=True, exist_ok=True)
    return removed


def _old_temps(folder: Path) -> list[Path]:
    """Given an inbox folder, return its `.<name>.part` files whose <name> is an ONSS answer's."""
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".part") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(InvalidName):
                    parse_name(entry.name[1 : -len(".part")])
                    found.append(Path(entry.path))
    return found
