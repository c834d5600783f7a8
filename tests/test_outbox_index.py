"""The claim's index of the outbox (stages/outbox_index.py) on a real directory: a scan of many waiting files holds
a bounded amount of memory (the index spills to a scratch SQLite file in the spool, read back a page at a time),
gives every set back in order, and feeds no declaration file to the settle tracker (the claim does, per page)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from onss_relay.config import Config, load_config
from onss_relay.names import parse_name, set_key
from onss_relay.pipeline import Relay
from onss_relay.spool import Spool
from onss_relay.stages.outbox_index import SCRATCH, SPILL_AT, index_outbox
from onss_relay.stages.settle import SettleTracker
from tests.conftest import fi_name
from tests.fake_transport import FakeTransport

FILES = 20 * SPILL_AT


def test_a_scan_of_thousands_of_waiting_files_holds_a_page_not_the_outbox(relay_dir: Path) -> None:
    spool = Spool(load_config(relay_dir / "config.toml", environ={}).paths)
    spool.create()
    for i in range(1, FILES + 1):
        (spool.outbox / fi_name(i)).write_bytes(b"<waiting/>")
    (spool.outbox / "notes.txt").write_bytes(b"not a declaration")
    tracker = SettleTracker(2.0)
    parse_name.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        index = index_outbox(spool, tracker)
        parse_name.cache_clear()  # bounded (4096 names) and shared by every stage: not the index's
        held, peak = (m - before for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    with index:
        # ~0.5 KB a file when the index was the names in memory: 20,000 files held ~10 MB after the scan
        assert held < 256 * 1024, f"{held} bytes held by the index of {FILES} files"
        assert peak < 4 * 1024 * 1024, f"{peak} bytes at the scan's peak ({FILES} files)"
        assert list(tracker.sightings()) == ["notes.txt"]  # declarations are fed to it by the claim, per page
        keys = [key for page in index.pages(300) for key in page]
        assert keys == sorted(set_key(parse_name(fi_name(i))) for i in range(1, FILES + 1))
        pages = list(index.pages(300, 25))  # a smaller first page (the claim's: signing starts sooner), then 300s
        assert [len(p) for p in pages[:3]] == [25, 300, 300] and [k for p in pages for k in p] == keys
        assert [f.name for f in index.files_of([keys[7]])[keys[7]]] == [fi_name(8)]
        assert fi_name(FILES) in index and "notes.txt" in index and "other" not in index
        assert (spool.paths.root / SCRATCH).exists()
    assert not (spool.paths.root / SCRATCH).exists()  # removed with the index


def test_a_name_that_is_no_utf8_in_a_spilled_outbox_is_quarantined_and_the_rest_claimed(cfg: Config) -> None:
    """Review rev6: a file named with bytes that are no UTF-8 (a surrogate in Python) among more than SPILL_AT
    files stopped every claim (the scratch index could not store the name, then could not look it up after the
    quarantine): the daemon's watch stage crashed at each retry and `send --once` sent nothing."""
    relay = Relay(cfg, connect=lambda: FakeTransport({}, []))
    try:
        bad = os.fsdecode(b"zz\xff.xml")
        (relay.spool.outbox / bad).write_bytes(b"x")
        names = [fi_name(i) for i in range(1, SPILL_AT + 11)]
        for name in names:
            (relay.spool.outbox / name).write_bytes(b"<waiting/>")
        claimed = relay.claim(wait_for_settle=True)
        claimed += relay.claim()  # the tracker still knows the quarantined name: looked up in the next index
        assert sorted(claimed) == sorted("GO" + n[2:-2] for n in names)
        assert not (relay.spool.outbox / bad).exists()
        assert [p for p in relay.spool.failed.rglob("*") if p.name.startswith("zz")]  # kept, with its reason
    finally:
        relay.close()


def test_an_index_held_in_memory_gives_a_smaller_first_page_then_pages_of_the_size_asked(relay_dir: Path) -> None:
    spool = Spool(load_config(relay_dir / "config.toml", environ={}).paths)
    spool.create()
    for i in range(1, 61):
        (spool.outbox / fi_name(i)).write_bytes(b"<waiting/>")
    with index_outbox(spool, SettleTracker(2.0)) as index:
        assert not (spool.paths.root / SCRATCH).exists()  # under SPILL_AT files: in memory
        pages = list(index.pages(25, 10))
        assert [len(p) for p in pages] == [10, 25, 25]
        assert [k for p in pages for k in p] == sorted(set_key(parse_name(fi_name(i))) for i in range(1, 61))
