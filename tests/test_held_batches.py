"""Issue 27: the originals of a batch of sent sets are held under one record (held.hold_many), written once and
deleted with the last of them; a sweep meanwhile never drops it, and an entry never applies to a later original
held later under the same name. And the GOs archived together into sent/ are names of one empty file."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from onss_relay import held
from onss_relay.config import Config
from onss_relay.spool import Spool, file_digest
from tests.conftest import fi_name


def hold(root: Path, outbox: Path, files: dict[str, bytes]) -> list[Path]:
    """Given the spool root, the outbox and files (name → bytes) just sent, hold them as one batch."""
    outbox.mkdir(parents=True, exist_ok=True)
    originals: list[tuple[Any, Path]] = []
    for name, data in files.items():
        (outbox / name).write_bytes(data)
        row = SimpleNamespace(go_name="GO" + name[2:], data=SimpleNamespace(digests={name: ""}))
        row.data.digests[name] = file_digest(outbox / name, "sha256")
        originals.append((row, outbox / name))
    return held.hold_many(root, originals, root / "sent" / "2026-12-01")


def sweep(root: Path, outbox: Path, keep_for: float, refused: list[Any]) -> int:
    return held.sweep(root, outbox, keep_for, lambda *a: refused.append(a))


def test_a_batch_record_goes_with_the_last_of_its_originals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    kept = hold(root, outbox, {fi_name(i): b"<DmfA/>" for i in range(1, 4)})
    [record] = (root / "held").glob("*.held-batch.json")
    busy = kept[1]  # a writer still holds it open: it waits for a later pass, and the record with it
    monkeypatch.setattr(held, "open_for_writing", lambda paths: {p for p in paths if p == busy})
    refused: list[Any] = []
    assert sweep(root, outbox, 0, refused) == 3
    assert [p.name for p in busy.parent.iterdir()] == [busy.name] and record.exists()
    monkeypatch.undo()
    assert sweep(root, outbox, 0, refused) == 1
    assert list((root / "held").iterdir()) == [] and refused == []


def test_a_sweep_while_a_batch_is_being_held_keeps_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon sweeps held/ in the claim stage while the upload stage holds a batch: between the batch record
    and the renames, none of its originals is there yet. Dropping the record then would leave them held forever,
    never checked nor deleted."""
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    real_rename = os.rename
    swept: list[int] = []

    def sweep_first(src: Any, dst: Any) -> None:
        if not swept:
            swept.append(sweep(root, outbox, 3600, []))
        real_rename(src, dst)

    monkeypatch.setattr(held.os, "rename", sweep_first)
    hold(root, outbox, {fi_name(i): b"<DmfA/>" for i in range(1, 3)})
    monkeypatch.undo()
    assert swept == [0]
    assert len(list((root / "held").glob("*.held-batch.json"))) == 1
    refused: list[Any] = []
    assert sweep(root, outbox, 0, refused) == 2
    assert list((root / "held").iterdir()) == [] and refused == []


def test_a_record_with_none_of_its_originals_is_dropped_once_old(tmp_path: Path) -> None:
    """A crash between the batch record and the renames: the originals are still in the outbox (released again
    by the next run); the record names nothing and goes at a pass after RECORD_GRACE."""
    root = tmp_path / "spool"
    (root / "held").mkdir(parents=True)
    record = root / "held" / f"batch-1-1{held.BATCH_RECORD}"
    (root / "held" / "batch-1-1").mkdir()
    record.write_text(json.dumps({"held": {fi_name(1): {"file": fi_name(1), "ino": 1, "held_at": 0}}}))
    assert sweep(root, root / "outbox", 0, []) == 0 and record.exists()  # maybe being held right now
    old = time.time() - held.RECORD_GRACE - 1
    os.utime(record, (old, old))
    assert sweep(root, root / "outbox", 0, []) == 0 and list((root / "held").iterdir()) == []


def test_a_name_freed_by_the_sweep_is_never_taken_by_a_later_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch's record stays while one of its originals is held open; the sweep deletes the other. A
    later batch holding a declaration of the same name holds it in its own folder: under the freed name, the first
    record's entry would apply to it (to failed/ as changed, or deleted before its own watch.keep_released)."""
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    first = hold(root, outbox, {fi_name(1): b"<DmfA/>", fi_name(2): b"<DmfA/>"})
    [record] = (root / "held").glob("*.held-batch.json")
    monkeypatch.setattr(held, "open_for_writing", lambda paths: {p for p in paths if p == first[1]})
    assert sweep(root, outbox, 0, []) == 2 and not first[0].exists()
    later = hold(root, outbox, {fi_name(1): b"<DmfB/>"})  # e.g. a name sent again after a requeue
    assert later[0] != first[0] and later[0].name == fi_name(1)
    refused: list[Any] = []
    assert sweep(root, outbox, 3600, refused) == 0  # neither is due
    doc = json.loads(record.read_text())
    for entry in doc["held"].values():
        entry["held_at"] = 0  # the first batch is due (held long ago: on the wall clock, its boot clock left out)
        entry.pop("boottime", None)
    record.write_text(json.dumps(doc))
    os.utime(record, (0, 0))  # and its record written then (the sweep lists none written since keep_released)
    assert sweep(root, outbox, 3600, refused) == 1  # the first batch's busy original only
    assert later[0].read_bytes() == b"<DmfB/>" and refused == []


def test_two_originals_of_one_name_in_one_batch_are_both_held(tmp_path: Path) -> None:
    root, outbox = tmp_path / "spool", tmp_path / "spool" / "outbox"
    (outbox / "again").mkdir(parents=True)
    (outbox / "again" / fi_name(1)).write_bytes(b"<DmfB/>")
    row = SimpleNamespace(go_name="GO", data=SimpleNamespace(digests={fi_name(1): "sha256:x"}))
    (outbox / fi_name(1)).write_bytes(b"<DmfA/>")
    kept = held.hold_many(root, [(row, outbox / fi_name(1)), (row, outbox / "again" / fi_name(1))], root / "sent")
    assert [p.read_bytes() for p in kept] == [b"<DmfA/>", b"<DmfB/>"] and kept[1].name == fi_name(1) + ".1"


def test_the_gos_archived_together_are_one_empty_file(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(cfg.paths)
    spool.create()
    day = spool.sent / "2026-12-01"
    day.mkdir(parents=True)
    (day / "GO.3").write_bytes(b"")  # archived before a crash: kept as it is
    import datetime as dt

    dest = spool.archive({f"GO.{i}": [] for i in range(1, 6)}, dt.date(2026, 12, 1))
    inodes = {(dest / f"GO.{i}").stat().st_ino for i in range(1, 6)}
    assert len(inodes) == 2 and all((dest / f"GO.{i}").read_bytes() == b"" for i in range(1, 6))
    assert (dest / "GO.1").stat().st_nlink == 4

    real_link = os.link

    def no_links(src: Any, dst: Any, **kw: Any) -> None:  # a share without hard links, or EMLINK
        if Path(dst).name.startswith("GO"):
            raise OSError(errno.EMLINK, "Too many links")
        real_link(src, dst, **kw)

    monkeypatch.setattr(os, "link", no_links)
    spool.archive({f"GO.{i}": [] for i in range(6, 9)}, dt.date(2026, 12, 1))
    assert len({(dest / f"GO.{i}").stat().st_ino for i in range(6, 9)}) == 3


def test_a_batch_reads_the_boot_id_once_and_every_record_carries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 (parentcpu): each original held read /proc/sys/kernel/random/boot_id again (a file read per set
    sent); a batch reads it once, and each of its entries still carries it."""
    reads: list[int] = []
    monkeypatch.setattr(held, "boot_id", lambda: reads.append(1) or "the-boot")
    root = tmp_path / "spool"
    hold(root, root / "outbox", {fi_name(i): b"<DmfA/>" for i in range(1, 6)})
    [record] = (root / "held").glob("*.held-batch.json")
    entries = json.loads(record.read_text())["held"]
    assert len(entries) == 5 and {e["boot_id"] for e in entries.values()} == {"the-boot"}
    assert len(reads) == 1
