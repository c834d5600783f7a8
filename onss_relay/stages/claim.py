"""The claim stage: find settled, complete, valid declaration sets in the outbox and queue them in the journal.

The scan is the truth; filesystem events (``watch.py``) only wake it early. The outbox is read once, streamed,
into bare names per set (``outbox_index.py``); sets are then claimed a page at a time (CLAIM_PAGE): checked,
committed and handed on before the next page is looked at, so memory stays bounded and signing and uploading
start after the first page. Invalid input is quarantined with a reason, never dropped. Claimed files stay in
the outbox until the uploader archives them into sent/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from onss_relay import held
from onss_relay.config import Config
from onss_relay.declaration import open_for_writing, xml_problem
from onss_relay.durable import atomic_write
from onss_relay.errors import JournalError
from onss_relay.journal import Journal, NewSet, SequenceKey, SetData, SetRow, State
from onss_relay.names import Name, Prefix, format_name, missing_parts, parse_name
from onss_relay.part_bytes import read_once
from onss_relay.sent_names import SentNames
from onss_relay.spool import Spool
from onss_relay.stages.claim_rules import latest_plausible_today, refusal, sent_before, with_keys, with_warnings
from onss_relay.stages.outbox_index import OutboxIndex, Seen, index_outbox
from onss_relay.stages.same_content import content_digest, earlier_with, same_content_detail
from onss_relay.stages.settle import SettleTracker
from onss_relay.stages.uncertain import boot_id, boottime
from onss_relay.stages.unrecorded import UnrecordedClaims

__all__ = ["CLAIM_PAGE", "Claimer", "SettleTracker", "latest_plausible_today"]

log = structlog.get_logger(__name__)

CLAIM_PAGE = 200  # sets looked at, claimed and committed together; the next page only once this one is handed on
# the first page of a scan: one signing batch, so that the first signatures (and uploads) start after ~25 sets'
# checks rather than 200 (the connection is ready by then)
FIRST_PAGE = 25
IN_FLIGHT_KEPT = 20_000  # claimed sets remembered as in flight (~100 B each); past it, their rows are read again
SWEEP_EVERY = 10.0  # seconds between looks at the held originals (held.py)
SIGHTINGS_REFRESH = 60.0  # seconds between rewrites of outbox-sightings.json when only the ages changed


@dataclasses.dataclass
class _SetFiles:
    key: str
    fis: dict[str, Path] = dataclasses.field(default_factory=dict)
    extras: dict[str, Path] = dataclasses.field(default_factory=dict)  # pre-made FS, a GO dropped by hand
    parsed: list[Name] = dataclasses.field(default_factory=list)

    def paths(self) -> list[Path]:
        return [*self.fis.values(), *self.extras.values()]

    def names_part(self, e: OSError) -> bool:
        """Given an error on a file, whether that file is one of the set's (taken back since the scan listed it)."""
        return e.filename is not None and str(e.filename) in {str(p) for p in self.paths()}


class Claimer:
    """Given the configuration, the journal and the spool, claim what is ready in the outbox."""

    def __init__(
        self, cfg: Config, journal: Journal, spool: Spool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.tracker = SettleTracker(cfg.watch.settle, clock)
        self.tracker.settle_unknown = cfg.watch.settle_unknown
        self.sent_names = SentNames(spool.sent)
        self._xml_seen: dict[str, tuple[object, str | None]] = {}  # set → ((name, size, mtime) of its FIs, problem)
        self._saved: frozenset[str] | None = None  # the names outbox-sightings.json holds (None: no such file)
        self._saved_at = 0.0
        self._next_sweep = 0.0
        self.held_sweep = held.HeldSweep()  # its cursor: no listing of held/ before a record can be due
        self._unrecorded = UnrecordedClaims()
        # the journal's rows of a scan's sets and the sets using their sequences, read together (scan_reads)
        self._rows: dict[str, SetRow] = {}
        self._used: dict[SequenceKey, list[SetRow]] = {}
        # sets claimed and in flight (their files stay in the outbox until sent), as of journal change _as_of:
        # not read again at each scan while the journal says they did not change (see _forget_changed). One whose
        # files went away without its row changing stays: were they dropped again, its row would say the same.
        self._in_flight: set[str] = set()
        self._as_of = 0
        self._load_sightings()

    def close(self) -> None:
        """Stop watching sent/ (sent_names.py)."""
        self.sent_names.close()

    def apply(self, cfg: Config) -> None:
        """Given a reloaded configuration, use its [watch] settings from the next scan on."""
        self.cfg = cfg
        self.tracker.settle = cfg.watch.settle
        self.tracker.settle_unknown = cfg.watch.settle_unknown

    def scan(self, on_page: Callable[[], object] | None = None) -> list[str]:
        """Scan the outbox once: quarantine bad files, claim complete settled sets a page at a time, calling
        on_page after each page that claimed something (committed: signing may start); return the claimed GO
        names."""
        self._forget_changed()
        claimed: list[str] = []
        with index_outbox(self.spool, self.tracker) as outbox:
            self.tracker.forget_missing(outbox)
            self._xml_seen = {k: v for k, v in self._xml_seen.items() if outbox.has_set(k)}
            for keys in outbox.pages(CLAIM_PAGE, min(FIRST_PAGE, CLAIM_PAGE)):
                page = self._claim_page(keys, outbox)
                claimed += page
                if page and on_page is not None:
                    on_page()
            self._unrecorded.after_scan(outbox, recorded=bool(claimed))
        self._save_sightings()
        self._sweep_due()
        return claimed

    def _claim_page(self, keys: list[str], outbox: OutboxIndex) -> list[str]:
        """Given a page of sets' GO names and the scan's index, claim those complete, settled and valid in one
        journal commit; return their GO names. Sets of earlier pages are in the journal by then: the sequence
        and content checks find them there."""
        keys = [k for k in keys if k not in self._in_flight]  # claimed before and unchanged: nothing to look at
        self.sent_names.look_again()  # sent/ looked at once per page, as the journal is read once per page
        files = outbox.files_of(keys)
        groups = [_set_files(key, [f.name for f in files[key]], self.spool.outbox) for key in keys]
        self._scan_reads(keys)
        ready = [(g, new) for g in groups if (new := self._consider(g, self._settled(g.key, files[g.key]))) is not None]
        # a file seen closed after writing (or renamed in) needs no look in /proc: the event said so
        unsure = [p for g, _ in ready for p in g.fis.values() if not self.tracker.closed(p.name)]
        busy = open_for_writing(unsure) if unsure else set()
        batch: list[NewSet] = []
        sequences: dict[tuple[str, str, str, str], str] = {}  # claimed in this page, not in the journal yet
        names: set[str] = set()
        for group, new in ready:
            try:
                with read_once([group.fis[n] for n in new.parts]):  # a small set's bytes read once for every check
                    checked = self._checked(group, new, busy, batch, sequences)
            except FileNotFoundError as e:
                if not group.names_part(e):  # another file gone (a spool folder): not this set's doing
                    raise
                continue  # a part taken back since the scan listed it: incomplete again, next scan
            if checked is not None:
                batch.append(checked)
                names |= set(group.fis) | set(group.extras)
        self._record(batch, names)
        # only once recorded: a journal that refused the commit (busy, full) finds them settled at the next scan,
        # which fails again until it commits, instead of a scan that touches nothing and looks like a recovery
        self.tracker.forget(names)
        for new in batch:
            self._xml_seen.pop(new.go_name, None)
        self._rows, self._used = {}, {}
        return [new.go_name for new in batch]

    def _checked(
        self,
        group: _SetFiles,
        new: NewSet,
        busy: set[Path],
        batch: list[NewSet],
        sequences: dict[tuple[str, str, str, str], str],
    ) -> NewSet | None:
        """Given a set ready by its names and settle delay, the files held open for writing, the sets claimed
        before it in this page and their sequences, return it checked and carrying its warnings and keys, or
        None (still being written, or quarantined)."""
        if not self._complete(group, new, busy):
            return None
        checked = self._admit(group, new, batch, sequences)
        if checked is None:
            return None
        parts = [group.fis[n] for n in new.parts]
        return with_keys(with_warnings(checked, parts), parts)

    def _settled(self, key: str, files: list[Seen]) -> bool:
        """Given a set of this page and its files as the scan saw them, feed them to the settle tracker and return
        whether all are settled; a set claimed already is not fed (it waits for its upload, not to settle: the
        tracker holds only what may still be claimed)."""
        row = self._rows.get(key)
        if row is not None and row.state != State.FAILED:
            return False
        return all([self.tracker.settled(f.name, f) for f in files])  # a list: every file fed, not the first few

    def _scan_reads(self, keys: list[str]) -> None:
        """Given the GO names of a page's sets, read their journal rows and the sets using their sequences in a
        few statements (not two round trips per set to a PostgreSQL journal)."""
        names = [parse_name(key) for key in keys]
        self._rows = self.journal.sets_by_names(keys) if keys else {}
        self._used = self.journal.sets_with_sequences([(n.sender, n.date, n.seq, n.env.value) for n in names])
        if len(self._in_flight) < IN_FLIGHT_KEPT:
            self._in_flight |= {k for k, r in self._rows.items() if r.state != State.FAILED and not r.archived}

    def _forget_changed(self) -> None:
        """Drop from the sets known in flight those the journal changed since they were read (sent, failed,
        requeued, by this relay or a command): the next page reads their rows again."""
        now = self.journal.last_change()
        if now < self._as_of:  # a journal put back from a backup: nothing known holds
            self._in_flight.clear()
        elif now != self._as_of and self._in_flight:
            self._in_flight -= {r.go_name for r in self.journal.sets_changed_after(self._as_of)}
        self._as_of = now

    def _sweep_due(self) -> None:
        """Sweep the held originals, not at every event-driven scan (held/ may hold thousands)."""
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + min(SWEEP_EVERY, self.cfg.watch.keep_released)
            self.sweep_held()

    @property
    def _sightings_path(self) -> Path:
        return self.spool.paths.root / "outbox-sightings.json"

    def _load_sightings(self) -> None:
        """Count from the first sightings an earlier run kept (a cron'd `send --once`; never from mtimes)."""
        try:
            doc = json.loads(self._sightings_path.read_bytes())
            self.tracker.restore(doc["files"], _since(doc))
            self._saved = frozenset(doc["files"])
        except (OSError, ValueError, KeyError, TypeError):
            self._saved = None

    def _save_sightings(self) -> None:
        """Keep the first sightings for the next run, rewritten only when the files seen change."""
        files = self.tracker.sightings()
        if not files and self._saved is None:
            return
        if self._saved is not None and self._saved == files.keys() and not self._stale():
            return
        data = json.dumps({"at": time.time(), "boottime": boottime(), "boot_id": boot_id(), "files": files}).encode()
        with contextlib.suppress(OSError):  # derived: a full disk only loses the count across runs
            atomic_write(self._sightings_path, data, sync=False)
            self._saved = frozenset(files)
            self._saved_at = time.monotonic()

    def _stale(self) -> bool:
        return time.monotonic() - self._saved_at > SIGHTINGS_REFRESH

    def sweep_held(self) -> None:
        """Delete the released originals held watch.keep_released and still unchanged; quarantine changed ones."""
        spool = self.spool

        def quarantine(files: list[Path], reason: str, detail: str, set_: str) -> None:
            spool.quarantine(files, reason, detail, set=set_)

        self.held_sweep.sweep(spool.paths.root, spool.outbox, self.cfg.watch.keep_released, quarantine, spool.stop)

    def _complete(self, group: _SetFiles, new: NewSet, busy: set[Path]) -> bool:
        """Given a set ready by its names and settle delay, return whether its content is complete too: no FI
        held open for writing by a local process, and well-formed XML (checked once per size and mtime). A
        broken XML file waits for its writer, and is quarantined once unchanged past watch.incomplete_after."""
        writing = sorted(p.name for p in group.fis.values() if p in busy)
        if writing:
            log.debug("declaration_still_open", set=group.key, files=writing)
            return False
        fis = [group.fis[n] for n in new.parts]  # in part order
        stats = [p.stat() for p in fis]
        if not all(new.data.unchanged(p.name, st) for p, st in zip(fis, stats, strict=True)):
            return False  # written to while we looked (a writer closing it just now): next scan
        seen = tuple((p.name, st.st_size, st.st_mtime_ns) for p, st in zip(fis, stats, strict=True))
        if self._xml_seen.get(group.key, (None, None))[0] != seen:
            try:
                self._xml_seen[group.key] = (seen, xml_problem(fis))
            except OSError:  # unreadable: claimed all the same, the sign stage sets it aside with the reason
                self._xml_seen[group.key] = (seen, None)
        problem = self._xml_seen[group.key][1]
        if problem is None:
            return True
        if min(self.tracker.unchanged_for(p.name) for p in fis) > self.cfg.watch.incomplete_after:
            self._refuse(group, parse_name(group.key), "not well-formed XML", problem)
        return False

    def _admit(
        self, group: _SetFiles, new: NewSet, batch: list[NewSet], sequences: dict[tuple[str, str, str, str], str]
    ) -> NewSet | None:
        """Given a complete set about to be claimed, the sets claimed before it in this scan and their sequences,
        return it carrying its content digest, or None when it was quarantined: its sequence taken in this scan,
        or its content that of a set claimed in the last watch.duplicate_content_days days."""
        go = parse_name(group.key)
        first = sequences.setdefault((go.sender, go.date, go.seq, go.env.value), group.key)
        if first != group.key:
            why = f"{group.key}: sequence {go.seq} of {go.date} ({go.env}) is also used by {first}, claimed now"
            self._refuse(group, go, "sequence already used, would be ACRF-133", why)
            return None
        if self.cfg.watch.duplicate_content_days <= 0:
            return new
        try:
            content = content_digest([group.fis[n] for n in new.parts])
        except OSError:  # unreadable: claimed all the same, the sign stage sets it aside with the reason
            return new
        twin = self._same_content(group.key, content, batch)
        if twin is not None:
            self._refuse(group, go, "same content as an earlier set", same_content_detail(group.key, *twin))
            return None
        return dataclasses.replace(new, data=dataclasses.replace(new.data, content=content))

    def _same_content(self, key: str, content: str, batch: list[NewSet]) -> tuple[str, str, float | None] | None:
        """Given a set's name and content digest, return (name, state, claimed at) of a set claimed in this scan
        or in the last watch.duplicate_content_days days with that content, unless `requeue --force` let it go."""
        row = self._rows.get(key)
        if row is not None and row.data.same_content_ok:
            return None
        env = parse_name(key).env.value  # within one environment: tested in T or S, then sent in R, is normal
        twin = next((n.go_name for n in batch if n.data.content == content and n.env == env), None)
        if twin is not None:
            return twin, "claimed now", None
        earlier = earlier_with(self.journal, content, self.cfg.watch.duplicate_content_days, key)
        return (earlier.go_name, earlier.state.value, earlier.created_at) if earlier else None

    def _record(self, claimed: list[NewSet], names: set[str]) -> None:
        """Given claimed sets and their outbox names, queue them in the journal (one commit) and say so; a
        refused commit is remembered (see unrecorded.py) and raised."""
        if claimed:
            try:
                self.journal.add_sets(claimed)
            except (JournalError, OSError) as e:
                self._unrecorded.refused(names, e)
                raise
            said = log.bind()  # made once for the batch, not per line (log.py, above setup_logging)
            for n in claimed:
                said.info("set_claimed", set=n.go_name, parts=len(n.parts), state="queued")

    def _consider(self, group: _SetFiles, settled: bool) -> NewSet | None:
        """Given a group of files and whether all are settled, return the set to queue, or None (refused,
        incomplete, not settled, or claimed before)."""
        go = parse_name(group.key)
        row = self._rows.get(group.key)
        if row is not None and row.state != State.FAILED:
            if row.archived:
                self._refuse(group, go, "duplicate name, would be ACRF-133", sent_before(group.key, group.fis, row))
            else:  # claimed already: in flight, or its archive is being completed; nothing to settle or keep
                self.tracker.forget({p.name for p in group.paths()})
            return None
        same_sequence = [
            r for r in self._used.get((go.sender, go.date, go.seq, go.env.value), []) if r.go_name != group.key
        ]
        if same_sequence:
            other = same_sequence[0]
            self._refuse(
                group,
                go,
                "sequence already used, would be ACRF-133",
                f"{group.key}: sequence {go.seq} of {go.date} ({go.env}) is already used by {other.go_name}"
                f" ({other.state}); the transfer point refuses a second use whatever the application code",
            )
            return None
        missing = missing_parts(go, [p for p in group.parsed if p.prefix == Prefix.FI])
        if missing:
            self._check_incomplete(group, missing)
            return None
        if not settled:
            return None
        earlier = self.sent_names.sent_with(go)
        if earlier is not None:  # the journal does not know it (lost, or restored from an old backup); sent/ does
            why = f"{group.key}: sequence {go.seq} of {go.date} ({go.env}) was already sent, as {earlier}"
            self._refuse(group, go, "duplicate name, would be ACRF-133", why)
            return None
        problem = refusal(self.cfg, go)
        if problem:
            self._refuse(group, go, *problem)
            return None
        try:
            stats = {name: path.stat() for name, path in group.fis.items()}
        except FileNotFoundError:  # a part taken back since the scan listed it: the set is incomplete again
            return None
        sizes = {name: st.st_size for name, st in stats.items()}
        mtimes = {name: st.st_mtime_ns for name, st in stats.items()}
        fis = [
            format_name(p)
            for p in sorted((p for p in group.parsed if p.prefix == Prefix.FI), key=lambda p: p.part or 0)
        ]
        identities = {name: (st.st_ino, st.st_ctime_ns) for name, st in stats.items()}
        data = SetData(sizes=sizes, mtimes=mtimes, extras=tuple(sorted(group.extras)), identities=identities)
        return NewSet(group.key, go.env.value, fis, data)

    def _check_incomplete(self, group: _SetFiles, missing: list[str]) -> None:
        waited = max(self.tracker.seen_for(p.name) for p in group.paths())  # since the first part was seen
        if waited > self.cfg.watch.incomplete_after:
            self._refuse(group, parse_name(group.key), "incomplete set", "missing parts: " + ", ".join(missing))

    def _refuse(self, group: _SetFiles, go: Name, reason: str, detail: str) -> None:
        # journal first: a crash before the move leaves the files in the outbox, refused again at the next scan
        # (files first left them in failed/ with no journal row, so no result and no status line for the set)
        self.journal.add_failed(group.key, go.env.value, sorted(group.fis), f"{reason}: {detail}")
        self.spool.quarantine(group.paths(), reason, detail, set=group.key)


def _set_files(key: str, names: list[str], outbox: Path) -> _SetFiles:
    """Given a set's GO name, its file names in the outbox and the outbox, return its files as the claim looks
    at them (paths by name, FI parts apart from the rest, every name parsed)."""
    group = _SetFiles(key)
    for name in names:
        parsed = parse_name(name)
        (group.fis if parsed.prefix == Prefix.FI else group.extras)[name] = outbox / name
        group.parsed.append(parsed)
    return group


def _since(doc: dict[str, Any]) -> float:
    """Given the sightings an earlier run kept, return the seconds since it kept them: on the boot clock within
    one boot (NTP stepping the wall clock forward between two cron'd runs aged every part by the step and
    quarantined sets whose parts were still coming), on the wall clock after a reboot or for an older file."""
    if "boottime" in doc and doc.get("boot_id") == boot_id():
        return boottime() - float(doc["boottime"])
    return time.time() - float(doc["at"])
