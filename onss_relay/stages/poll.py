"""The poll stage: mirror OUT, OUTTEST and OUTTEST-S into inbox/ durably, and only then delete remotely.

A response set is taken once its GO is there; a file without GO once its size held across two polls.
Every remote name is hostile until it parses: anything else is never written, never deleted, logged once.
A folder of any size: its listing is streamed to disk (poll_listing.py) and taken in batches of sets, each
batch copied, committed, then deleted remotely; a stop (SIGTERM) ends the poll between two batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import structlog

from onss_relay import crash_point
from onss_relay.config import Config
from onss_relay.durable import free_name, fsync_dir, sync_written
from onss_relay.errors import InvalidName, RemoteError, RemoteFileGone
from onss_relay.journal import Journal
from onss_relay.named_writes import LocalFile
from onss_relay.names import Env, Name, Prefix, parse_name, response_folder, set_key
from onss_relay.signature import digest_file
from onss_relay.spool import Spool
from onss_relay.stages.poll_leftovers import remove_old_part_files
from onss_relay.stages.poll_listing import SpilledListing
from onss_relay.stages.poll_sightings import sightings_path
from onss_relay.transport.base import RemoteEntry, SizeLimitExceeded, Transport
from onss_relay.transport.batch import Fetch

log = structlog.get_logger(__name__)

RESPONSE_PREFIXES = (Prefix.FO, Prefix.CO, Prefix.FS, Prefix.GO)
BATCH_FILES = 300  # remote files copied, fsynced and committed together before their remote delete
DOWNLOADING = ".downloading"  # inbox/.downloading/<folder>/<name>: a file while it downloads
FETCH_GROUP = 100  # files of a batch downloading at once (each holds an open temp file)
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
        self._sightings = sightings_path(spool.paths.root)  # sizes at the last poll, kept across runs
        self._run = uuid.uuid4().hex  # what this process said once is kept in the sightings file under it
        self._listing: SpilledListing | None = None  # the folder's listing while it is polled
        self._too_large: dict[str, int] = {}  # "FOLDER/name" → size, left on the server

    @property
    def downloading(self) -> Path:
        """The small folder of downloads in progress (inbox/.downloading/<OUT folder>/): the only place a temp
        file can be, so a start looks there and never lists the inbox, which holds every answer kept."""
        return self.spool.inbox / DOWNLOADING

    def remove_stale_temps(self) -> list[Path]:
        """Remove our own half-downloaded temp files left by a crash (their remote copies were never deleted),
        and once those older versions left in the inbox folders (poll_leftovers.py)."""
        removed: list[Path] = []
        for folder in self.folders():
            with contextlib.suppress(FileNotFoundError):
                for temp in (self.downloading / folder).iterdir():
                    temp.unlink(missing_ok=True)
                    removed.append(temp)
        if removed:
            log.info("stale_downloads_removed", count=len(removed))
        return remove_old_part_files(self.spool.inbox, self.downloading) + removed

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
        return report

    def _poll_folder(self, t: Transport, folder: str, report: PollReport) -> None:
        """List one folder into a spilled listing, then take its ready sets in batches until done or stopped; then
        keep the sizes of the files without GO still there for the next poll (poll_listing.py)."""
        root = self.spool.paths.root
        with SpilledListing(root / "poll-listing.db", self._sightings, folder, self._run) as listing:
            self._listing = listing
            try:
                self._take_listed(t, folder, listing, report)
            finally:
                self._listing = None
        if report.stopped:
            log.info("poll_stopped", folder=folder, mirrored=report.counts["mirrored"], detail="the next poll resumes")

    def _take_listed(self, t: Transport, folder: str, listing: SpilledListing, report: PollReport) -> None:
        for entry in t.scan(folder):
            parsed = validate_remote_entry(entry)
            if isinstance(parsed, str):
                self._suspicious(folder, entry.name, parsed, report)
            else:
                listing.add(set_key(parsed), entry)
        batch: list[RemoteEntry] = []
        for key, entries, last in listing.sets():
            members = [(e, parse_name(e.name)) for e in entries]
            listing.reached(key, not any(n.prefix == Prefix.GO for _, n in members))
            batch += self._ready(members, last)
            if len(batch) >= BATCH_FILES:
                listing.taken(self._take_batch(t, folder, batch, report))
                batch = []
                if self.stop.is_set():
                    report.stopped = True
                    break
        if batch and not report.stopped:
            listing.taken(self._take_batch(t, folder, batch, report))
        listing.save_sightings(report.stopped)  # the sets not reached keep what the last poll saw of them

    def _ready(self, members: list[tuple[RemoteEntry, Name]], last: dict[str, int]) -> Iterable[RemoteEntry]:
        """Given one response set's remote files and the sizes the last poll saw, return those to take now, the
        GO last."""
        has_go = any(n.prefix == Prefix.GO for _, n in members)
        ordered = sorted(members, key=lambda m: (m[1].prefix == Prefix.GO, m[1].prefix == Prefix.FS, m[0].name))
        for entry, _ in ordered:
            if has_go or last.get(entry.name) == entry.size:
                yield entry

    def _suspicious(self, folder: str, name: str, why: str, report: PollReport) -> None:
        report.add("suspicious", f"{folder}/{name!r}")
        if self._first_note(name):
            log.warning("remote_name_suspicious", folder=folder, file=repr(name)[:300], detail=why)

    def _take_batch(self, t: Transport, folder: str, entries: list[RemoteEntry], report: PollReport) -> list[str]:
        """Copy a batch of sets' files durably (many in flight, each file fsynced, one folder fsync, one journal
        commit for all), then delete them remotely (many in flight, one more commit): a stop or a crash between
        two batches loses nothing and repeats nothing; nothing is deleted before its copy and record are durable.
        Return the names deleted remotely."""
        wanted: list[RemoteEntry] = []
        to_delete = []
        for entry in entries:
            state = self._wanted(folder, entry, report)
            if state == "held":
                to_delete.append(entry.name)
            elif state == "fetch":
                wanted.append(entry)
        fresh: list[tuple[str, int, str]] = []
        for i in range(0, len(wanted), FETCH_GROUP):
            for name, local in self._fetch_group(t, folder, wanted[i : i + FETCH_GROUP], report):
                fresh.append((name, local.stat().st_size, str(local)))
                to_delete.append(name)
        if fresh:
            fsync_dir(self.spool.inbox / folder)
            self.journal.add_responses(folder, fresh)  # committed before any remote delete
        if not self.cfg.poll.delete_remote or not to_delete:
            return []
        t.delete_many(folder, to_delete)
        for name in to_delete:
            report.add("deleted", f"{folder}/{name}")
        self.journal.mark_responses_deleted(folder, to_delete)
        return to_delete

    def _wanted(self, folder: str, entry: RemoteEntry, report: PollReport) -> str:
        """Given one remote file of a ready set, return "held" when we hold a copy already (deleting it remotely
        is safe), "fetch" when it is to be copied, "left" when it stays on the server."""
        known = self.journal.get_response(folder, entry.name)
        # held: the copy we recorded is still on the server; of another size it is a new file of a name deleted
        # by a poll killed before its commit said so (fetched, kept beside, never deleted unseen)
        if known is not None and not known.deleted_remote and known.size == entry.size:
            return "held"
        if known is not None:
            # we copied and deleted this name before and it is back: fetch it again (identical bytes are not
            # stored twice, other bytes are kept beside the first copy), never delete it unseen
            log.warning("response_name_reused", folder=folder, file=entry.name, detail="downloading it again")
        if entry.size > self.cfg.poll.max_size:  # seen in the listing: never downloaded, on any transport
            self._too_large_left(folder, entry.name, entry.size, report)
            return "left"
        return "fetch"

    def _fetch_group(
        self, t: Transport, folder: str, entries: list[RemoteEntry], report: PollReport
    ) -> list[tuple[str, Path]]:
        """Given remote files to copy, download them together into temp files, fsync each, rename each in;
        return (name, final path) of those copied (the caller fsyncs the folder once for the group)."""
        dest_dir = self.spool.inbox / folder
        dest_dir.mkdir(parents=True, exist_ok=True)
        (self.downloading / folder).mkdir(parents=True, exist_ok=True)
        temps = {e.name: self._temp_path(folder, e.name) for e in entries}
        fetches: list[Fetch] = []
        try:
            for entry in entries:
                # a full disk names the temp file, never passes for the server's error in a transport
                fetches.append(Fetch(entry.name, LocalFile(temps[entry.name], f"downloading {folder}/{entry.name}")))
            t.get_many(folder, fetches, self.cfg.poll.max_size)
            sync_written([f.dest for f in fetches if f.error is None])  # written together, made durable together
        except BaseException:
            for f in fetches:
                with contextlib.suppress(OSError):
                    f.dest.close()
                    temps[f.name].unlink()
            raise
        copied = []
        for f in fetches:
            f.dest.close()
            if f.error is not None:
                temps[f.name].unlink(missing_ok=True)
                self._file_trouble(folder, f.name, f.error, report)
                continue
            local = self._place(folder, f.name, temps[f.name])
            report.add("mirrored", f"{folder}/{f.name}")
            log.info("response_mirrored", folder=folder, file=f.name, path=str(local))
            copied.append((f.name, local))
        return copied

    def _file_trouble(self, folder: str, name: str, error: RemoteError, report: PollReport) -> None:
        """Given one file's own error while copying it, say it where it belongs; the file stays on the server."""
        if isinstance(error, SizeLimitExceeded):  # the listing said less than the server sent
            self._too_large_left(folder, name, self.cfg.poll.max_size + 1, report)
        elif isinstance(error, RemoteFileGone):  # gone since the listing (another reader took it): nothing to report
            log.info("response_gone", folder=folder, file=name, detail="gone from the server since it was listed")
        else:  # this one file cannot be read (a link out, no permission)
            self._suspicious(folder, name, f"cannot be read: {error}", report)

    def _too_large_left(self, folder: str, name: str, size: int, report: PollReport) -> None:
        report.add("too_large", f"{folder}/{name}")
        self._too_large[f"{folder}/{name}"] = size
        if self._first_note(name):
            log.error(
                "response_too_large",
                folder=folder,
                file=name,
                size=size,
                detail=f"larger than poll.max_size ({self.cfg.poll.max_size} bytes): left on the server, "
                "not downloaded; raise poll.max_size to fetch it",
            )

    def _first_note(self, name: str) -> bool:
        """Given a file of the folder polled found suspicious or too large, return whether to say it (once a
        process; kept on disk with the sightings, not in memory: 100,000 of them are no memory)."""
        return self._listing is None or self._listing.first_note(name)

    def _temp_path(self, folder: str, name: str) -> Path:
        """Where folder/name is written while it downloads (renamed into inbox/<folder>/ once durable)."""
        return self.downloading / folder / name

    def _place(self, folder: str, name: str, temp: Path) -> Path:
        """Given a durable temp copy of folder/name, rename it into inbox/folder/ (beside a local file of that
        name with other bytes, never over it); return the final path. The caller fsyncs the folder."""
        dest_dir = self.spool.inbox / folder
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
        os.replace(temp, final)
        crash_point.renamed()
        return final


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    return digest_file(a) == digest_file(b)
