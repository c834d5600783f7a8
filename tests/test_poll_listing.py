"""The poll's scratch listing (stages/poll_listing.py) on a real filesystem: SQLite's errors become the OSError
they are, so the user reads "disk full" for a full spool and the I/O error itself for anything else."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from onss_relay.errors import describe_os_error
from onss_relay.stages.poll_listing import SpilledListing
from onss_relay.transport.base import RemoteEntry
from tests.test_full_disk import small  # noqa: F401  (the tmpfs fixture)
from tests.test_single_faults import fill


def test_a_full_spool_stops_the_listing_as_disk_full_and_another_error_as_an_io_error(
    small: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    filler = fill(small)
    with pytest.raises(OSError) as full, SpilledListing(small / "poll-listing.db") as listing:
        for i in range(50_000):
            listing.add(f"key{i}", RemoteEntry(f"name{i}", 10, "file"))
        list(listing.sets())
    assert full.value.errno == errno.ENOSPC, repr(full.value)
    assert "disk full" in describe_os_error(full.value), describe_os_error(full.value)
    assert not (small / "poll-listing.db").exists()  # the scratch file is removed, the room given back
    filler.unlink()

    with pytest.raises(OSError) as other:  # not a full disk: SQLite cannot open a file in a missing folder
        SpilledListing(tmp_path / "gone" / "poll-listing.db").close()
    assert other.value.errno == errno.EIO, repr(other.value)
    assert "disk full" not in describe_os_error(other.value)
