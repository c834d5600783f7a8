"""Retention: what the daemon removes from results/, inbox/ and sent/ some days after a set's final answer,
and the on_result hook's told records with the results (hook_record.py keeps what stands for them).

Only sets with their final answer are touched (notified, refused, a circuit test its ACRF accepted,
quarantined); a set still waiting keeps everything. The journal keeps every set's row, history and outcome.
Answers linked to no set (another application's, a lost journal's sets') leave the inbox ``inbox_days`` after
the relay took them, unless linked meanwhile; their rows stay, saying so (issue 29: the inbox never grows for ever).
Each kind walks the journal from where its last run stopped (``retention.json`` in the spool, saved after every
page): a run looks at the sets that reached the cut-off since, never at the whole history again.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from onss_relay.archived import archived_files
from onss_relay.config import RetentionConfig
from onss_relay.durable import atomic_write
from onss_relay.errors import InvalidName
from onss_relay.hook_record import HookRecord
from onss_relay.hooks import told_key
from onss_relay.journal import Journal, SetRow, State
from onss_relay.names import Prefix, format_name, parse_name, set_key
from onss_relay.outcome import final_answer
from onss_relay.spool import Spool

log = structlog.get_logger(__name__)

DAY = 86400.0
PAGE = 500
KINDS = ("results", "inbox", "sent", "hook", "unlinked")
DAYS_OF = {
    "results": "results_days",
    "inbox": "inbox_days",
    "sent": "sent_days",
    "hook": "results_days",
    "unlinked": "inbox_days",
}


def is_final(row: SetRow) -> bool:
    """Given a set, return whether nothing more comes for it: the ONSS's final answer is in (outcome.final_answer,
    the rule the on_result hook tells by too), or it was quarantined."""
    return row.state == State.FAILED or final_answer(row)


class Pruner:
    """Given the retention settings, the journal and the spool, remove what is past its days; count it."""

    def __init__(
        self, cfg: RetentionConfig, journal: Journal, spool: Spool, stop: threading.Event | None = None
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.stop = stop or threading.Event()  # a run ends between two pages (its first walks a year of sets)
        self.totals: collections.Counter[str] = collections.Counter()  # files removed since start, by kind
        self._cursor_path = spool.paths.root / "retention.json"

    def run_once(self, now: float | None = None) -> dict[str, int]:
        """Prune every kind whose days are set, as of ``now``; log one line with the counts; return them."""
        now = time.time() if now is None else now
        cursors = self._load()
        counts = {kind: 0 for kind in KINDS}
        for kind in KINDS:
            days = getattr(self.cfg, DAYS_OF[kind])
            if days:
                counts[kind] = self._prune(kind, now - days * DAY, cursors)
        self._save(cursors)
        self.totals.update(counts)
        log.info("retention_pruned", **{f"{k}_files": v for k, v in counts.items()})
        return counts

    def _prune(self, kind: str, until: float, cursors: dict[str, tuple[float, str]]) -> int:
        if kind == "hook":
            return self._prune_told(until, cursors)
        if kind == "unlinked":
            return self._prune_unlinked(until, cursors)
        removed = 0
        for page in self._pages(until, cursors, kind):
            for row in page:
                if is_final(row):
                    removed += sum(_remove(p, self.spool.sent) for p in self._files(kind, row))
        return removed

    def _prune_told(self, until: float, cursors: dict[str, tuple[float, str]]) -> int:
        """Remove the hook's told records of the sets told their final state last written up to ``until``
        (nothing more is told of them unless they change); return how many (0 when the hook never ran here)."""
        if not (self.spool.paths.root / "hook" / "told").is_dir():
            return 0
        record, removed = HookRecord(self.spool.paths.root), 0
        for page in self._pages(until, cursors, "hook"):
            final = [(r.go_name, told_key(r, None), r.change, r.updated_at) for r in page if final_answer(r)]
            removed += record.prune_told(final)
        return removed

    def _prune_unlinked(self, until: float, cursors: dict[str, tuple[float, str]]) -> int:
        """Remove from the inbox the answers linked to no set that the relay took up to ``until`` (each with its
        FS and GO), a page at a time from the walk's cursor, saved after each page; their rows stay, marked
        pruned in the same transaction (an answer linked meanwhile keeps its file); return how many files."""
        removed = 0
        while not self.stop.is_set():
            at, folder_name = cursors.get("unlinked", (0.0, "/"))
            folder, _, name = folder_name.rpartition("/")
            page = self.journal.unmatched_until(until, (at, folder, name), PAGE)
            if not page:
                break
            with self.journal.atomic():  # a removal that fails undoes its page's marks: walked again next run
                for _, r in page:
                    if self.journal.mark_pruned(r.folder, r.name):
                        files = _with_marks(self.spool.inbox / r.folder / Path(r.local_path).name)
                        removed += sum(_remove(p, self.spool.sent) for p in files)
            cursors["unlinked"] = (page[-1][0], f"{page[-1][1].folder}/{page[-1][1].name}")
            _save_walks(self._cursor_path, cursors, sync=True)
        return removed

    def _pages(self, until: float, cursors: dict[str, tuple[float, str]], kind: str) -> Iterator[list[SetRow]]:
        """Yield the sets last written up to ``until`` since the kind's cursor, a page at a time; once the caller
        is done with a page, move the cursor past it and save every cursor durably, so that a walk killed half
        way (its first one walks a year of sets) resumes from its last page, not from its start. A set written
        again later (an answer after its final one) comes again once that write is old enough."""
        while not self.stop.is_set() and (
            page := self.journal.sets_updated_until(until, cursors.get(kind, (0.0, "")), PAGE)
        ):
            yield page
            cursors[kind] = (page[-1].updated_at, page[-1].go_name)
            _save_walks(self._cursor_path, cursors, sync=True)

    def _files(self, kind: str, row: SetRow) -> list[Path]:
        """Given a kind and a set, return its files of that kind in THIS spool: the journal's paths are re-rooted
        (a spool moved, copied or restored elsewhere keeps the old absolute paths in its journal: pruning must
        never reach the other copy)."""
        if kind == "results":
            return [self.spool.results / f"{row.go_name}.json"]
        if kind == "inbox":
            return [
                p
                for r in self.journal.responses_linked_to(row.go_name)
                for p in _with_marks(self.spool.inbox / r.folder / Path(r.local_path).name)
            ]
        return archived_files(self.spool.sent, row)

    def _load(self) -> dict[str, tuple[float, str]]:
        return _load_walks(self._cursor_path)

    def _save(self, cursors: dict[str, tuple[float, str]]) -> None:
        _save_walks(self._cursor_path, cursors)


def forget_walk(spool: Spool, kind: str) -> None:
    """Given the spool and a kind of file retention prunes, make its next run of that kind start from the first
    set (files written again for old sets, e.g. every result after results.cursor was deleted, would otherwise
    stay for ever: the walk is past them)."""
    path = spool.paths.root / "retention.json"
    walks = _load_walks(path)
    if walks.pop(kind, None) is not None:
        _save_walks(path, walks)


def _load_walks(path: Path) -> dict[str, tuple[float, str]]:
    """Given retention.json, return where each kind's walk stopped ({} when there is none or it is damaged)."""
    try:
        raw = json.loads(path.read_text())
        return {k: (float(v[0]), str(v[1])) for k, v in raw.items() if k in KINDS}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        return {}


def _save_walks(path: Path, walks: dict[str, tuple[float, str]], sync: bool = False) -> None:
    """Given retention.json and where each kind's walk stopped, replace it atomically; ``sync`` for the saves a
    walk makes page after page (a killed walk resumes from the last one; without it a page at most is walked
    again after a power cut)."""
    atomic_write(path, json.dumps(walks).encode(), sync=sync)


def _with_marks(answer: Path) -> list[Path]:
    """Given an answer file in the inbox (FO or CO), return it with the FS and GO that came with it."""
    try:
        name = parse_name(answer.name)
    except InvalidName:
        return [answer]
    if name.prefix not in (Prefix.FO, Prefix.CO):
        return [answer]
    fs = format_name(dataclasses.replace(name, prefix=Prefix.FS))
    return [answer, answer.with_name(fs), answer.with_name(set_key(name))]


def _remove(path: Path, sent: Path) -> int:
    """Given a file and the sent/ folder, remove the file (and its day folder in sent/ once empty); return 1
    when it was there."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    with contextlib.suppress(OSError):
        if path.parent.parent == sent:
            os.rmdir(path.parent)  # refused while the day's folder still holds files
    return 1
