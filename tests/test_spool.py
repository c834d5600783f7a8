"""BatchWriter: a signing batch's FS files appear together, durable, or not at all."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from onss_relay.spool import BatchWriter


def test_files_appear_under_their_names_only_at_commit(tmp_path: Path) -> None:
    w = BatchWriter(tmp_path)
    for i in range(3):
        w.write(f"FS.{i}", f"signature {i}".encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".FS.0.tmp", ".FS.1.tmp", ".FS.2.tmp"]
    w.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FS.0", "FS.1", "FS.2"]
    assert (tmp_path / "FS.1").read_bytes() == b"signature 1"


def test_a_failed_commit_leaves_no_temp_and_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = BatchWriter(tmp_path)
    w.write("FS.0", b"x")
    w.write("FS.1", b"y")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        w.commit()
    assert list(tmp_path.iterdir()) == []


def test_abort_removes_what_was_written(tmp_path: Path) -> None:
    w = BatchWriter(tmp_path)
    w.write("FS.0", b"x")
    w.abort()
    assert list(tmp_path.iterdir()) == []
