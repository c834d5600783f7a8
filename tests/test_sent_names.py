"""sent/ as the claim's second memory of used sequences (a lost journal): a day's folder grows by thousands while
a large outbox is claimed and sent, and each claimed set asks it; a day's folder is listed once and watched
(inotify), and only names new since the last look are parsed. Where inotify cannot be used (``unwatched``), a
folder is listed again at each look when its mtime changed."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from onss_relay import folder_events, sent_names
from onss_relay.config import Config
from onss_relay.journal import State
from onss_relay.names import parse_name
from onss_relay.pipeline import Relay
from tests.conftest import TODAY, fi_name
from tests.test_uploader_sftp import drop_sets


@pytest.fixture(params=["watched", "unwatched"])
def watching(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test of what sent/ shows runs with the day folders watched and as where inotify cannot be used (its
    128 instances per user taken by other programs, or not Linux)."""
    if request.param == "unwatched":
        monkeypatch.setattr(sent_names.FolderEvents, "watch", lambda self, folder: False)
    return str(request.param)


def go(seq: int) -> str:
    return "GO" + fi_name(seq)[2:-2]


class Clock:
    """time.monotonic() as sent_names sees it, moved by the test; a listing takes 1 ms of it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        real = os.listdir

        def listing(path):  # type: ignore[no-untyped-def]
            self.now += 0.001
            return real(path)

        monkeypatch.setattr(sent_names.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(sent_names.os, "listdir", listing)

    def pause(self, seconds: float, result: object) -> object:
        self.now += seconds
        return result


def test_a_growing_sent_folder_is_parsed_once_per_new_name_and_again_when_a_name_went_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watching: str
) -> None:
    day = tmp_path / "sent" / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    day.mkdir(parents=True)
    for seq in range(1, 101):
        (day / go(seq)).touch()
        (day / fi_name(seq)).touch()
    parsed: list[str] = []

    def counted(name: str):  # type: ignore[no-untyped-def]
        parsed.append(name)
        return parse_name(name)

    monkeypatch.setattr(sent_names, "parse_name", counted)
    clock = Clock(monkeypatch)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(7))) == day / go(7)
    assert len(parsed) == 100  # the GO files only
    mtime = day.stat().st_mtime_ns

    def changed() -> None:
        nonlocal mtime
        mtime += 1_000_000_000  # a new second: what a file archived later gives the folder
        os.utime(day, ns=(mtime, mtime))
        clock.now += 1.0  # past the pause after a listing (RELIST_PAUSE times its duration)
        names.look_again()  # what the claim does at each page

    (day / go(101)).touch()
    changed()
    parsed.clear()
    assert names.sent_with(parse_name(go(101))) == day / go(101) and parsed == [go(101)]
    (day / go(7)).unlink()  # retention removed it: the folder is read again in full
    changed()
    parsed.clear()
    assert names.sent_with(parse_name(go(7))) is None and len(parsed) == 100
    assert names.sent_with(parse_name(go(102))) is None


def test_sent_is_looked_at_once_per_look_however_many_sets_ask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watching: str
) -> None:
    """The claim asks for every set of a page; sent/ and its day folder are listed (and stat'ed) at most once per
    page's look, and what was archived meanwhile is seen from the next look on: from the watched day folder's
    events, without listing it again (10,000 sets: 50 listings of ~15,000 names each), or listed again."""
    day = tmp_path / "sent" / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    day.mkdir(parents=True)
    (day / go(1)).touch()
    listed: list[str] = []
    real = os.listdir

    def counted(path):  # type: ignore[no-untyped-def]
        listed.append(str(path))
        return real(path)

    monkeypatch.setattr(sent_names.os, "listdir", counted)
    clock = Clock(monkeypatch)
    names = sent_names.SentNames(tmp_path / "sent")
    for seq in range(2, 202):
        assert names.sent_with(parse_name(go(seq))) is None
    assert names.sent_with(parse_name(go(1))) == day / go(1)
    assert listed == [str(tmp_path / "sent"), str(day)]
    (day / go(300)).touch()
    os.utime(day, ns=(day.stat().st_mtime_ns + 1_000_000_000,) * 2)
    assert names.sent_with(parse_name(go(300))) is None  # the same look
    clock.now += 1.0
    names.look_again()
    assert names.sent_with(parse_name(go(300))) == day / go(300)
    assert listed == [str(tmp_path / "sent"), str(day), str(tmp_path / "sent")] + ([str(day)] * (watching != "watched"))


def test_a_long_lived_claim_looks_at_sent_again_at_each_page(cfg: Config, watching: str) -> None:
    """The daemon's claim stage lives for weeks: a GO that appears in sent/ after an earlier scan looked (a set the
    journal does not know: restored from an older backup while it ran) still refuses a later set of that sequence."""
    relay = Relay(cfg)
    try:
        first = drop_sets(relay.spool.outbox, [(1, "T", 1)])
        assert relay.claimer.scan() == first  # sent/ looked at: empty
        day = relay.spool.sent / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
        day.mkdir(parents=True, exist_ok=True)
        (day / go(7)).touch()  # sent, unknown to the journal
        drop_sets(relay.spool.outbox, [(7, "T", 1)])
        assert relay.claimer.scan() == []
        row = relay.journal.get_set(go(7))
        assert row is not None and row.state == State.FAILED and "already sent" in (row.reason or "")
    finally:
        relay.close()


def test_a_day_folder_that_cannot_be_read_fails_the_claim_instead_of_letting_a_sent_sequence_through(
    cfg: Config, monkeypatch: pytest.MonkeyPatch, watching: str
) -> None:
    """A journal lost, and a sent/ day folder the relay's user cannot list (restored by root as 0700, an NFS
    error): read as empty, its sets' sequences went out a second time (ACRF-133). The claim fails instead, naming
    the folder, and claims nothing; a file with a day's name (not a folder) is still no memory."""
    relay = Relay(cfg)
    try:
        day = relay.spool.sent / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
        day.mkdir(parents=True, exist_ok=True)
        (day / go(7)).touch()  # sent, unknown to the journal
        (relay.spool.sent / "2000-01-01").write_text("not a folder")
        real = os.listdir

        def unreadable(path):  # type: ignore[no-untyped-def]
            if str(path) == str(day):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr("onss_relay.sent_names.os.listdir", unreadable)
        drop_sets(relay.spool.outbox, [(7, "T", 1)])
        with pytest.raises(PermissionError) as e:
            relay.claimer.scan()
        assert e.value.filename == str(day)
        assert relay.journal.get_set(go(7)) is None
        monkeypatch.setattr("onss_relay.sent_names.os.listdir", real)
        assert relay.claimer.scan() == []
        row = relay.journal.get_set(go(7))
        assert row is not None and row.state == State.FAILED and "already sent" in (row.reason or "")
    finally:
        relay.close()


def test_a_day_folder_not_asked_for_an_hour_is_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's claim lives for months and sent/ keeps every day (retention.sent_days 0): a day folder read
    once (thousands of names, ~3.7 MB for 5,000 sets) was kept until the process ended, even once retention had
    deleted it. Folders no set asked about for an hour are dropped (read again, in full, if one asks later)."""
    now = 1000.0
    monkeypatch.setattr("onss_relay.sent_names.time.monotonic", lambda: now)
    days = []
    for k in (1, 2):
        day = tmp_path / "sent" / f"2026-01-0{k}"
        day.mkdir(parents=True)
        (day / go(k).replace(TODAY, f"2026010{k}")).touch()
        days.append(day)
    names = sent_names.SentNames(tmp_path / "sent")
    old = parse_name(go(9).replace(TODAY, "20260101"))  # asks both folders
    recent = parse_name(go(9).replace(TODAY, "20260103"))  # asks the second one only (dated 2026-01-02 or later)
    assert names.sent_with(old) is None
    assert set(names._folders) == set(days)
    now += 1800
    names.look_again()
    assert names.sent_with(recent) is None
    now += 1801
    names.look_again()
    assert set(names._folders) == {days[1]}
    assert names.sent_with(parse_name(go(1).replace(TODAY, "20260101"))) == days[0] / go(1).replace(TODAY, "20260101")


def test_a_go_put_back_by_hand_right_after_a_listing_is_seen_at_the_next_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watching: str
) -> None:
    """ACRF-133: a GO put back into sent/ by hand (the journal lost it) is what stops a set reusing its sequence.
    The journal does not know it, so sent/ must show it from the next look on: a pause after a listing (49c544c,
    200 times its duration: 25 s after the first listing of a 30,000-name day) let the set through and sent its
    sequence a second time (review rev13: a real daemon, a 30,000-name day)."""
    day = tmp_path / "sent" / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    day.mkdir(parents=True)
    (day / go(1)).touch()
    clock = Clock(monkeypatch)
    monkeypatch.setattr(
        sent_names.os, "listdir", lambda path, real=sent_names.os.listdir: clock.pause(0.015, real(path))
    )
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) == day / go(1)  # a day's listing: 15 ms
    (day / go(2)).touch()  # put back by hand
    os.utime(day, ns=(day.stat().st_mtime_ns + 1_000_000_000,) * 2)
    clock.now += 0.1  # the next claim page
    names.look_again()
    assert names.sent_with(parse_name(go(2))) == day / go(2)


def today_folder(tmp_path: Path) -> Path:
    day = tmp_path / "sent" / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    day.mkdir(parents=True)
    return day


def test_a_go_put_back_by_hand_while_events_were_lost_is_seen_at_the_next_look(tmp_path: Path) -> None:
    """The kernel keeps fs.inotify.max_queued_events events per watcher (16,384 by default) and drops the rest,
    saying only that it did: a day of archives between two looks (a daemon whose claim slept) can lose the event of
    a GO put back by hand. The folders are then listed again in full."""
    day = today_folder(tmp_path)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) is None
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    for i in range(limit + 10):
        os.close(os.open(day / f"FI.x{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    (day / go(1)).touch()  # its event is lost: the queue is full
    names.look_again()
    assert names.sent_with(parse_name(go(1))) == day / go(1)
    names.close()


def test_a_day_folder_deleted_and_made_again_is_listed_again(tmp_path: Path) -> None:
    """Retention deletes an empty day's folder; a GO put back by hand makes it again: the watch was on the folder
    that went away, and the new one is listed."""
    day = today_folder(tmp_path)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) is None
    day.rmdir()
    day.mkdir()
    (day / go(1)).touch()
    names.look_again()
    assert names.sent_with(parse_name(go(1))) == day / go(1)
    other = tmp_path / "moved-away"
    day.rename(other)  # moved aside by hand, and a copy put back
    day.mkdir()
    (day / go(2)).touch()
    names.look_again()
    assert names.sent_with(parse_name(go(1))) is None
    assert names.sent_with(parse_name(go(2))) == day / go(2)
    names.close()


def test_a_forked_process_reads_no_event_meant_for_its_parent(tmp_path: Path) -> None:
    """The relay forks its claiming and signing process: a SentNames made before the fork must not read the
    parent's events in the child (one inotify queue, read by whichever comes first): the child watches afresh."""
    day = today_folder(tmp_path)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) is None  # listed, watched
    (day / go(1)).touch()  # by hand: an event in the queue
    ctx = multiprocessing.get_context("fork")
    seen = ctx.Queue()

    def child() -> None:
        names.look_again()
        (day / go(2)).touch()
        names.look_again()
        seen.put([str(names.sent_with(parse_name(go(k)))) for k in (1, 2)])

    p = ctx.Process(target=child)
    p.start()
    assert seen.get(timeout=30) == [str(day / go(1)), str(day / go(2))]
    p.join(30)
    names.look_again()
    assert names.sent_with(parse_name(go(1))) == day / go(1)  # its event was still there for the parent
    assert names.sent_with(parse_name(go(2))) == day / go(2)
    names.close()


def test_folder_events_says_where_it_cannot_watch(tmp_path: Path) -> None:
    """A folder that is not there or not a folder is not watched (the caller lists it, and finds nothing); a watch
    on a folder goes when it is unwatched, and its late events are not reported."""
    events = folder_events.FolderEvents()
    assert not events.watch(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    assert not events.watch(tmp_path / "file")
    assert events.watch(tmp_path) and events.watching(tmp_path)
    (tmp_path / "a").touch()
    (tmp_path / "file").unlink()
    assert events.changes() == ({tmp_path: ["a"]}, {tmp_path})
    (tmp_path / "b").touch()
    events.unwatch(tmp_path)
    assert events.changes() == ({}, set()) and not events.watching(tmp_path)
    events.close()


def test_a_folder_on_a_share_is_not_watched_but_listed_at_each_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On NFS or SMB, inotify sees only what this machine did: a GO put back into sent/ from another machine would
    never be an event. Only filesystems whose every change goes through this kernel are watched; elsewhere the
    folder is listed at each look when its mtime changed."""
    assert folder_events.local_filesystem(tmp_path) is not None  # ext4 or tmpfs
    assert folder_events.local_filesystem(Path("/proc")) is None  # procfs, a filesystem not in the list
    assert folder_events.local_filesystem(tmp_path / "missing") is None
    monkeypatch.setattr(folder_events, "LOCAL_FILESYSTEMS", {})  # as on NFS: this filesystem is not known local
    day = today_folder(tmp_path)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) is None
    assert not names._events.watching(day)
    fd = os.open(day / go(1), os.O_CREAT | os.O_WRONLY, 0o644)  # from another machine: no event here
    os.close(fd)
    names.look_again()
    assert names.sent_with(parse_name(go(1))) == day / go(1)
    names.close()


@pytest.mark.parametrize("stale", [False, True], ids=["", "a name removed first"])
@pytest.mark.parametrize("how", ["sent moved aside", "spool moved aside", "symlink retargeted"])
def test_a_day_folder_path_that_names_another_folder_now_is_listed_again(tmp_path: Path, how: str, stale: bool) -> None:
    """A watch is on a folder, not on its path: moving sent/ or the spool aside (a damaged disk) and restoring it
    from a backup renames an ancestor, which is no event of the day folder's (IN_MOVE_SELF is for the watched folder
    itself), and retargeting a day folder's symlink is none either. The path then names another folder, whose GOs
    (restored by hand: the journal lost them) must stop a set reusing their sequences (ACRF-133; review rev14)."""
    spool = tmp_path / "spool"
    day_name = f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    sent = spool / "sent"
    if how == "symlink retargeted":
        sent.mkdir(parents=True)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        (sent / day_name).symlink_to(tmp_path / "a")
    else:
        (sent / day_name).mkdir(parents=True)
    names = sent_names.SentNames(sent)
    assert names.sent_with(parse_name(go(1))) is None  # listed, watched
    if stale:  # a name went away: listed again at the next look, its watch kept (on the folder that goes next)
        (sent / day_name / "FI.x").touch()
        (sent / day_name / "FI.x").unlink()
    if how == "symlink retargeted":
        (tmp_path / "b" / go(1)).touch()
        (sent / "tmp").symlink_to(tmp_path / "b")
        (sent / "tmp").rename(sent / day_name)  # ln -sfn
    else:
        moved = spool if how == "spool moved aside" else sent
        moved.rename(moved.with_name(moved.name + ".damaged"))
        (sent / day_name).mkdir(parents=True)
        (sent / day_name / go(1)).touch()  # restored from a backup
    names.look_again()
    assert names.sent_with(parse_name(go(1))) == sent / day_name / go(1)
    (sent / day_name / go(2)).touch()  # and one more put back by hand: the folder there now is the one watched
    names.look_again()
    assert names.sent_with(parse_name(go(2))) == sent / day_name / go(2)
    names.close()


def test_a_day_folder_listed_again_after_a_name_went_away_is_not_watched_for_good_if_no_set_asks_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder whose events say a name went away is forgotten until a set asks again (then watched and listed
    again): a day retention thins that no set asks about again kept its watch for as long as the daemon ran
    (review rev14)."""
    day = today_folder(tmp_path)
    clock = Clock(monkeypatch)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) is None  # listed, watched
    (day / "FI.x").touch()
    (day / "FI.x").unlink()
    names.look_again()
    assert names.sent_with(parse_name(go(1))) is None  # listed again
    (day / "FI.y").touch()
    (day / "FI.y").unlink()
    names.look_again()
    names._read_events()  # a look that asks nothing of that day
    clock.now += sent_names.KEEP_UNASKED + 1
    names.look_again()
    assert not names._events.watching(day)
    (day / go(2)).touch()
    names.look_again()
    assert names.sent_with(parse_name(go(2))) == day / go(2)
    names.close()


def test_a_day_folder_swapped_while_its_watch_is_added_is_not_trusted_to_its_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sent/ moved aside and restored between the watch being added and the folder being listed: the watch is on
    the folder that went, the listing of the one there now. Trusted, a GO put back into the restored folder would
    be no event of the watched one's (ACRF-133); the folder is listed again at the next look instead."""
    day = today_folder(tmp_path)
    real = sent_names.FolderEvents.watch

    def swapped(self: folder_events.FolderEvents, folder: Path) -> bool:
        added = real(self, folder)
        (tmp_path / "sent").rename(tmp_path / "sent.damaged")
        day.mkdir(parents=True)  # the restored copy
        return added

    monkeypatch.setattr(sent_names.FolderEvents, "watch", swapped)
    names = sent_names.SentNames(tmp_path / "sent")
    assert names.sent_with(parse_name(go(1))) is None
    monkeypatch.setattr(sent_names.FolderEvents, "watch", real)
    (day / go(1)).touch()  # put back by hand into the restored folder
    names.look_again()
    assert names.sent_with(parse_name(go(1))) == day / go(1)
    names.close()
