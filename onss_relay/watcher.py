"""The outbox: find settled, complete, valid declaration sets and claim them into the journal.

The scan is the truth; filesystem events (watchdog) only wake it early. Invalid input is quarantined with a
reason, never dropped. Claimed files stay in the outbox until the uploader archives them into sent/.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from onss_relay.config import Config
from onss_relay.errors import InvalidName
from onss_relay.journal import Journal, State
from onss_relay.names import Name, Prefix, format_name, missing_parts, parse_name, sent_application_codes, set_key
from onss_relay.spool import Spool, is_temp_name

log = structlog.get_logger(__name__)


@dataclasses.dataclass
class _Sighting:
    size: int
    mtime_ns: int
    since: float  # monotonic time this (size, mtime) was first seen


class SettleTracker:
    """Given a settle delay, tell when a file kept its size and mtime that long (monotonic clock)."""

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self._seen: dict[str, _Sighting] = {}

    def settled(self, name: str, st: os.stat_result) -> bool:
        now = self.clock()
        prev = self._seen.get(name)
        if prev is None or (prev.size, prev.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self._seen[name] = _Sighting(st.st_size, st.st_mtime_ns, now)
            return self.settle <= 0
        return now - prev.since >= self.settle

    def forget_missing(self, present: set[str]) -> None:
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]


@dataclasses.dataclass
class _SetFiles:
    key: str
    fis: dict[str, Path] = dataclasses.field(default_factory=dict)
    extras: dict[str, Path] = dataclasses.field(default_factory=dict)  # pre-made FS, a GO dropped by hand
    parsed: list[Name] = dataclasses.field(default_factory=list)

    def paths(self) -> list[Path]:
        return [*self.fis.values(), *self.extras.values()]


class Outbox:
    """Given the configuration, the journal and the spool, claim what is ready in the outbox."""

    def __init__(self, cfg: Config, journal: Journal, spool: Spool, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.tracker = SettleTracker(cfg.watch.settle, clock)

    def scan(self) -> list[str]:
        """Scan the outbox once: quarantine bad files, claim complete settled sets; return the claimed GO names."""
        sets: dict[str, _SetFiles] = {}
        present: set[str] = set()
        all_settled: dict[str, bool] = {}
        for entry in self._entries():
            name, path, st = entry
            present.add(name)
            settled = self.tracker.settled(name, st)
            try:
                parsed = parse_name(name)
            except InvalidName as e:
                if settled:
                    self.spool.quarantine([path], "not a valid declaration file name", str(e))
                continue
            if parsed.prefix not in (Prefix.FI, Prefix.FS, Prefix.GO):
                if settled:
                    self.spool.quarantine([path], "not a declaration file", f"{name}: prefix {parsed.prefix} is not sent by senders")
                continue
            group = sets.setdefault(set_key(parsed), _SetFiles(set_key(parsed)))
            (group.fis if parsed.prefix == Prefix.FI else group.extras)[name] = path
            group.parsed.append(parsed)
            all_settled[group.key] = all_settled.get(group.key, True) and settled
        self.tracker.forget_missing(present)
        claimed = []
        for key, group in sets.items():
            if self._consider(group, all_settled[key]):
                claimed.append(key)
        return claimed

    def _entries(self) -> list[tuple[str, Path, os.stat_result]]:
        out = []
        try:
            it = os.scandir(self.spool.outbox)
        except FileNotFoundError:
            return out
        with it:
            for e in it:
                if is_temp_name(e.name):
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.append((e.name, Path(e.path), st))
        return sorted(out)

    def _consider(self, group: _SetFiles, settled: bool) -> bool:
        go = parse_name(group.key)
        row = self.journal.get_set(group.key)
        if row is not None and row.state != State.FAILED:
            if row.archived:
                self._refuse(group, go, "duplicate name, would be ACRF-133",
                             f"{group.key} was already sent on {dt.datetime.fromtimestamp(row.created_at):%Y-%m-%d}")
            return False  # claimed already: in flight, or its archive is being completed
        missing = missing_parts(go, [p for p in group.parsed if p.prefix == Prefix.FI])
        if missing:
            self._check_incomplete(group, missing)
            return False
        if not settled:
            return False
        problem = self._validate(go)
        if problem:
            self._refuse(group, go, *problem)
            return False
        sizes = {name: path.stat().st_size for name, path in group.fis.items()}
        fis = [format_name(p) for p in sorted((p for p in group.parsed if p.prefix == Prefix.FI), key=lambda p: p.part or 0)]
        self.journal.add_set(group.key, go.env.value, fis, {"sizes": sizes, "extras": sorted(group.extras)})
        log.info("set_claimed", set=group.key, parts=len(fis), state="queued")
        return True

    def _validate(self, go: Name) -> tuple[str, str] | None:
        """Given a complete set's GO name, return (reason, detail) when it must not be sent, else None."""
        if go.sender != self.cfg.sender.number:
            return ("wrong sender number, would be ACRF-108",
                    f"{go}: sender {go.sender} is not the configured sender.number {self.cfg.sender.number}")
        if go.env.value not in self.cfg.watch.environments:
            return ("environment not allowed", f"{go}: environment {go.env} is not in watch.environments")
        if go.creation_date > dt.date.today():
            return ("date in the future, would be ACRF-111", f"{go}: date {go.date} is after today")
        if go.app not in sent_application_codes():
            return ("not a code senders send", f"{go}: {go.app} is a response-only application code")
        return None

    def _check_incomplete(self, group: _SetFiles, missing: list[str]) -> None:
        oldest = min(p.stat().st_mtime for p in group.paths())
        if time.time() - oldest > self.cfg.watch.incomplete_after:
            self._refuse(group, parse_name(group.key), "incomplete set", "missing parts: " + ", ".join(missing))

    def _refuse(self, group: _SetFiles, go: Name, reason: str, detail: str) -> None:
        self.spool.quarantine(group.paths(), reason, detail, set=group.key)
        self.journal.add_failed(group.key, go.env.value, sorted(group.fis), f"{reason}: {detail}")
