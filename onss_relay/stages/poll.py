"""The poll stage: mirror OUT, OUTTEST and OUTTEST-S into inbox/ durably, and only then delete remotely.

A response set is taken once its GO is there; a file without GO once its size held across two polls.
Every remote name is hostile until it parses: anything else is never written, never deleted, logged once.
A folder of any size: its listing is streamed to disk (poll_listing.py) and taken in batches of sets, each
batch copied, committed, then deleted remotely; a stop (SIGTERM) ends the poll between two batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import structlog

from onss_relay import crash_point
from onss_relay.config import Config
from onss_relay.durable import atomic_write, free_name, fsync_dir
from onss_relay.errors import InvalidName, PermanentRemoteError, RemoteFileGone
from onss_relay.journal import Journal
from onss_relay.names import Env, Name, Prefix, parse_name, response_folder, set_key
from onss_relay.signature import digest_file
from onss_relay.spool import Spool
from onss_relay.stages.poll_listing import SpilledListing
from onss_relay.transport.base import RemoteEntry, SizeLimitExceeded, Transport

log = structlog.get_logger(__name__)

RESPONSE_PREFIXES = (Prefix.FO, Prefix.CO, Prefix.FS, Prefix.GO)
BATCH_FILES = 300  # remote files copied, fsynced and committed together before their remote delete
REPORT_SAMPLE = 1000  # names a report keeps of each kind (its counts are complete)


@dataclasses.dataclass
class PollReport:
    """What one poll did: complete counts, and the first REPORT_SAMPLE "FOLDER/name" of each kind."""

    mirrored: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    suspicious: list[str] = dataclasses.field(default_factory=list)
    too_large: list[str] = dataclasses.field(default_factory=list)
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    stopped: bool = False  # ended by a stop between two batches; the next poll takes the rest

    def add(self, what: str, name: str) -> None:
        """Given a kind (mirrored, deleted, suspicious, too_large) and a "FOLDER/name", count it and keep a sample."""
        self.counts[what] += 1
        names: list[str] = getattr(self, what)
        if len(names) < REPORT_SAMPLE:
            names.append(name)


def validate_remote_entry(entry: RemoteEntry) -> Name | str:
    """Given a remote listing entry, return its parsed Name, or a sentence saying why it is suspicious."""
    if entry.kind != "file":
        return f"is a {entry.kind}, not a regular file"
    try:
        parsed = parse_name(entry.name)
    except InvalidName as e:
        return f"has a name outside the ONSS grammar ({e.field} {e.why})"
    if parsed.prefix not in RESPONSE_PREFIXES:
        return f"has prefix {parsed.prefix}, which the ONSS does not use for responses"
    return parsed


class Poller:
    """Given the configuration, journal and spool, mirror remote responses into the inbox."""

    def __init__(self, cfg: Config, journal: Journal, spool: Spool, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.journal = journal
        self.spool = spool
        self.stop = stop or threading.Event()
        self._last_sizes = self._load_sightings()  # sizes at the last poll, kept across runs (cron'd poll --once)
        self._reported: set[tuple[str, str]] = set()
        self._too_large: dict[str, int] = {}  # "FOLDER/name" → size, left on the server

    def remove_stale_temps(self) -> list[Path]:
        """Remove our own half-downloaded temp files left by a crash (their remote copies were never deleted)."""
        removed = []
        for folder in self.folders():
            for temp in (self.spool.inbox / folder).glob(".*.part"):
                temp.unlink(missing_ok=True)
                removed.append(temp)
        if removed:
            log.info("stale_downloads_removed", count=len(removed))
        return removed

    def folders(self) -> list[str]:
        return [response_folder(Env(e)) for e in self.cfg.poll.environments]

    def poll_once(self, t: Transport) -> PollReport:
        """List every polled OUT folder once and mirror what is ready; return what happened."""
        report = PollReport()
        self._too_large = {}
        for folder in self.folders():
            self._poll_folder(t, folder, report)
            if report.stopped:
                break
        self.spool.note_left_on_server(self._too_large)
        self._save_sightings()
        return report

    @property
    def _sightings_path(self) -> Path:
        return self.spool.paths.root / "poll-sightings.json"

    def _load_sightings(self) -> dict[tuple[str, str], int]:
        self._sightings_saved = b""
        try:
            self._sightings_saved = self._sightings_path.read_bytes()
            return {(str(f), str(n)): int(size) for f, n, size in json.loads(self._sightings_saved)}
        except (OSError, ValueError, TypeError):
            return {}

    def _save_sightings(self) -> None:
        """Remember the sizes seen, so that a file without GO is taken at the next poll of another process too.
        Only a hint (at worst a GO-less file waits one more poll): written when it changes, without fsync."""
        data = json.dumps(sorted([f, n, size] for (f, n), size in self._last_sizes.items())).encode()
        if data != self._sightings_saved:
            with contextlib.suppress(OSError):
                atomic_write(self._sightings_path, data, sync=False)
                self._sightings_saved = data

    def _poll_folder(self, t: Transport, folder: str, report: PollReport) -> None:
        """List one folder into a spilled listing, then take its ready sets in batches until done or stopped."""
        sightings: dict[tuple[str, str], int] = {}
        with SpilledListing(self.spool.paths.root / "poll-listing.db") as listing:
            for entry in t.scan(folder):
                parsed = validate_remote_entry(entry)
                if isinstance(parsed, str):
                    self._suspicious(folder, entry.name, parsed, report)
                else:
                    listing.add(set_key(parsed), entry)
            batch: list[RemoteEntry] = []
            for key, entries in listing.sets():
                members = [(e, parse_name(e.name)) for e in entries]
                if not any(n.prefix == Prefix.GO for _, n in members):  # a GO-less set: taken once its sizes hold
                    sightings |= {(folder, e.name): e.size for e in entries}
                batch += self._ready(folder, key, members)
                if len(batch) >= BATCH_FILES:
                    self._take_batch(t, folder, batch, report)
                    batch = []
                    if self.stop.is_set():
                        report.stopped = True
                        break
            if batch and not report.stopped:
                self._take_batch(t, folder, batch, report)
        if report.stopped:  # the sets not reached keep what the last poll saw of them
            log.info("poll_stopped", folder=folder, mirrored=report.counts["mirrored"], detail="the next poll resumes")
            sightings = {k: v for k, v in self._last_sizes.items() if k[0] == folder} | sightings
        self._last_sizes = {k: v for k, v in self._last_sizes.items() if k[0] != folder} | sightings

    def _ready(self, folder: str, key: str, members: list[tuple[RemoteEntry, Name]]) -> Iterable[RemoteEntry]:
        """Given one response set's remote files, return those to take now, the GO last."""
        has_go = any(n.prefix == Prefix.GO for _, n in members)
        ordered = sorted(members, key=lambda m: (m[1].prefix == Prefix.GO, m[1].prefix == Prefix.FS, m[0].name))
        for entry, _ in ordered:
            if has_go or self._last_sizes.get((folder, entry.name)) == entry.size:
                yield entry

    def _suspicious(self, folder: str, name: str, why: str, report: PollReport) -> None:
        report.add("suspicious", f"{folder}/{name!r}")
        if (folder, name) not in self._reported:
            self._reported.add((folder, name))
            log.warning("remote_name_suspicious", folder=folder, file=repr(name)[:300], detail=why)

    def _take_batch(self, t: Transport, folder: str, entries: list[RemoteEntry], report: PollReport) -> None:
        """Copy a batch of sets' files durably (one folder fsync, one journal commit for all), then delete them
        remotely (one more commit): a stop or a crash between two batches loses nothing and repeats nothing."""
        fresh: list[tuple[str, int, str]] = []
        to_delete = []
        for entry in entries:
            taken = self._take(t, folder, entry, report)
            if taken is None:
                continue
            if isinstance(taken, tuple):
                fresh.append(taken)
            to_delete.append(entry.name)
        if fresh:
            fsync_dir(self.spool.inbox / folder)
            self.journal.add_responses(folder, fresh)  # committed before any remote delete
        if not self.cfg.poll.delete_remote or not to_delete:
            return
        for name in to_delete:
            t.delete(folder, name)
            report.add("deleted", f"{folder}/{name}")
        self.journal.mark_responses_deleted(folder, to_delete)

    def _take(
        self, t: Transport, folder: str, entry: RemoteEntry, report: PollReport
    ) -> tuple[str, int, str] | bool | None:
        """Given one remote file of a ready set, return (name, size, local path) once copied, True when we hold a
        copy already (deleting it remotely is safe), None when it stays on the server."""
        known = self.journal.get_response(folder, entry.name)
        if known is not None and not known.deleted_remote:
            return True
        if known is not None:
            # we copied and deleted this name before and it is back: fetch it again (identical bytes are not
            # stored twice, other bytes are kept beside the first copy), never delete it unseen
            log.warning("response_name_reused", folder=folder, file=entry.name, detail="downloading it again")
        if entry.size > self.cfg.poll.max_size:  # seen in the listing: never downloaded, on any transport
            self._too_large_left(folder, entry.name, entry.size, report)
            return None
        local = self._fetch(t, folder, entry.name, report)
        if local is None:
            return None
        report.add("mirrored", f"{folder}/{entry.name}")
        log.info("response_mirrored", folder=folder, file=entry.name, path=str(local))
        return entry.name, local.stat().st_size, str(local)

    def _fetch(self, t: Transport, folder: str, name: str, report: PollReport) -> Path | None:
        try:
            return self._download(t, folder, name)
        except SizeLimitExceeded:  # the listing said less than the server sent
            self._too_large_left(folder, name, self.cfg.poll.max_size + 1, report)
        except RemoteFileGone:  # gone since the listing (another reader took it): nothing to report
            log.info("response_gone", folder=folder, file=name, detail="gone from the server since it was listed")
        except PermanentRemoteError as e:  # this one file cannot be read (a link out, no permission)
            self._suspicious(folder, name, f"cannot be read: {e}", report)
        return None

    def _too_large_left(self, folder: str, name: str, size: int, report: PollReport) -> None:
        report.add("too_large", f"{folder}/{name}")
        self._too_large[f"{folder}/{name}"] = size
        if (folder, name) not in self._reported:
            self._reported.add((folder, name))
            log.error(
                "response_too_large",
                folder=folder,
                file=name,
                size=size,
                detail=f"larger than poll.max_size ({self.cfg.poll.max_size} bytes): left on the server, "
                "not downloaded; raise poll.max_size to fetch it",
            )

    def _download(self, t: Transport, folder: str, name: str) -> Path:
        """Copy folder/name to inbox/folder/ under a temp name, fsync it, rename it in; return the final path."""
        dest_dir = self.spool.inbox / folder
        dest_dir.mkdir(parents=True, exist_ok=True)
        temp = dest_dir / f".{name}.part"
        try:
            with temp.open("wb") as f:
                t.get(folder, name, f, self.cfg.poll.max_size)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        final = dest_dir / name
        if final.exists():
            if _same_bytes(final, temp):
                temp.unlink()  # our own second copy of a file already safe here
                return final
            final = free_name(dest_dir, name)
            log.warning(
                "response_name_reused",
                folder=folder,
                file=name,
                kept_as=final.name,
                detail="a local file of this name has other bytes; the new one is kept beside it",
            )
        os.replace(temp, final)  # the caller fsyncs the folder once for the whole set
        crash_point.renamed()
        return final


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return digest_file(a) == digest_file(b)
