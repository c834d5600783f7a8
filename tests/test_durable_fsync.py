"""fsync_files: the fsyncs of a signing batch run several at once (durable.py). An error names its file and is
raised only once every fsync ended; a forked child (send --once's claiming and signing) gets threads of its own."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from onss_relay.durable import FSYNC_THREADS, BatchWriter, fsync_files
from tests.helpers import forked_exit_code


def test_an_fsync_that_fails_names_its_file_and_the_others_are_still_synced(tmp_path: Path) -> None:
    good = [tmp_path / f"f{i}" for i in range(5)]
    files = [p.open("wb") for p in good]
    r, w = os.pipe()  # fsync of a pipe fails (EINVAL): a real failing fsync, no mock
    pipe = os.fdopen(w, "wb")
    try:
        items = [(p, f) for p, f in zip(good, files, strict=True)]
        items.insert(2, (tmp_path / "the-pipe", pipe))
        with pytest.raises(OSError) as e:
            fsync_files(items)
        assert e.value.errno == errno.EINVAL and e.value.filename == str(tmp_path / "the-pipe")
    finally:
        for f in [*files, pipe]:
            f.close()
        os.close(r)


@pytest.mark.parametrize("failing_at", [0, 2, 7])
def test_every_file_of_a_run_is_fsynced_past_one_that_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_at: int
) -> None:
    """The files are fsynced in runs, one thread per run: a failure early in a run leaves none after it
    unsynced (each fsync is the real one, seen on its way)."""
    synced: list[int] = []
    real_fsync = os.fsync

    def seen(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", seen)
    good = [tmp_path / f"f{i}" for i in range(4 * FSYNC_THREADS)]
    files = [p.open("wb") for p in good]
    r, w = os.pipe()
    pipe = os.fdopen(w, "wb")
    try:
        items = [(p, f) for p, f in zip(good, files, strict=True)]
        items.insert(failing_at, (tmp_path / "the-pipe", pipe))
        with pytest.raises(OSError) as e:
            fsync_files(items)
        assert e.value.filename == str(tmp_path / "the-pipe")
        assert sorted(synced) == sorted(f.fileno() for _, f in items)
    finally:
        for f in [*files, pipe]:
            f.close()
        os.close(r)


def test_a_forked_child_syncs_with_threads_of_its_own(tmp_path: Path) -> None:
    parents = [tmp_path / f"p{i}" for i in range(4 * FSYNC_THREADS)]
    fsync_files([(p, p.open("wb")) for p in parents])  # every thread of the parent's pool made, idle now

    def in_the_child() -> bool:  # the parent's pool exists now; its threads do not exist in the child
        writer = BatchWriter(tmp_path)
        for i in range(4):
            writer.write(f"child{i}", b"x")
        writer.commit()
        return True

    assert (
        forked_exit_code(in_the_child, "the forked child's fsyncs waited on threads that exist only in its parent") == 0
    )
    assert sorted(p.name for p in tmp_path.glob("child*")) == [f"child{i}" for i in range(4)]
