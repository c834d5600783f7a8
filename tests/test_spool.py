"""Spool primitives: a batch of FS files appears together or not at all; moves never overwrite or lose a file."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onss_relay.config import Config
from onss_relay.durable import BatchWriter, atomic_write, move_durably, temp_name


def test_files_appear_under_their_names_only_at_commit(tmp_path: Path) -> None:
    w = BatchWriter(tmp_path)
    for i in range(3):
        w.write(f"FS.{i}", f"signature {i}".encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == [temp_name(f"FS.{i}") for i in range(3)]
    w.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FS.0", "FS.1", "FS.2"]
    assert (tmp_path / "FS.1").read_bytes() == b"signature 1"


def test_two_processes_writing_one_file_on_a_shared_folder_never_share_a_temp(tmp_path: Path) -> None:
    """Review of issue 25: both relays wrote results/ through `.NAME.tmp`; one renamed the other's temp away (its
    rename then failed with ENOENT). Another process's temp, under the old shared name, is left alone here."""
    (tmp_path / ".GO.1.json.tmp").write_bytes(b"the other relay's, being written")
    atomic_write(tmp_path / "GO.1.json", b"mine")
    w = BatchWriter(tmp_path)
    w.write("FS.1", b"signature")
    (tmp_path / ".FS.1.tmp").write_bytes(b"the other relay's signature")
    w.commit()
    assert (tmp_path / "GO.1.json").read_bytes() == b"mine" and (tmp_path / "FS.1").read_bytes() == b"signature"
    assert (tmp_path / ".GO.1.json.tmp").read_bytes() == b"the other relay's, being written"
    assert (tmp_path / ".FS.1.tmp").read_bytes() == b"the other relay's signature"


TEMP_NAME_AS_PID_1 = """
import os
import subprocess
import sys
os.getpid = lambda: 1  # pid 1, as a container's relay is
from onss_relay.durable import temp_name
print(temp_name("GO.1.json"))
"""


def test_two_containers_relays_of_one_host_name_both_pid_1_never_share_a_temp() -> None:
    """Audit of issue 25: the temp name was .NAME.HOST-PID.tmp; two containers on the host's network share its
    name and both run the relay as pid 1, so both wrote health.json and results/ through one temp file."""
    names = {
        subprocess.run([sys.executable, "-c", TEMP_NAME_AS_PID_1], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(names) == 2, names


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


def _src(tmp_path: Path, body: bytes = b"declaration") -> Path:
    (tmp_path / "outbox").mkdir(exist_ok=True)
    (tmp_path / "sent").mkdir(exist_ok=True)
    src = tmp_path / "outbox" / "FI.x"
    src.write_bytes(body)
    return src


def test_move_never_overwrites_a_taken_name(tmp_path: Path) -> None:
    src = _src(tmp_path)
    (tmp_path / "sent" / "FI.x").write_bytes(b"an older one")
    assert move_durably(src, tmp_path / "sent").name == "FI.x.1"
    assert (tmp_path / "sent" / "FI.x").read_bytes() == b"an older one"
    assert (tmp_path / "sent" / "FI.x.1").read_bytes() == b"declaration" and not src.exists()


def test_move_after_a_crash_between_link_and_unlink_keeps_one_copy(tmp_path: Path) -> None:
    src = _src(tmp_path)
    os.link(src, tmp_path / "sent" / "FI.x")  # the link was made, the process died before the unlink
    assert move_durably(src, tmp_path / "sent").name == "FI.x"
    assert sorted(p.name for p in (tmp_path / "sent").iterdir()) == ["FI.x"] and not src.exists()


@pytest.mark.parametrize("err", [errno.EPERM, errno.EXDEV])
def test_move_without_hard_links_or_across_filesystems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    src = _src(tmp_path)
    (tmp_path / "sent" / "FI.x").write_bytes(b"an older one")

    def no_link(a: object, b: object, **kwargs: object) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "link", no_link)  # an SMB share without hard links, or the outbox on another mount
    assert move_durably(src, tmp_path / "sent").name == "FI.x.1"
    assert (tmp_path / "sent" / "FI.x").read_bytes() == b"an older one"
    assert (tmp_path / "sent" / "FI.x.1").read_bytes() == b"declaration" and not src.exists()


def test_a_symbolic_link_moved_across_filesystems_stays_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "secret.p12"
    target.write_bytes(b"not for failed/")
    (tmp_path / "out").mkdir()
    (tmp_path / "failed").mkdir()
    link = tmp_path / "out" / "FI.x"
    link.symlink_to(target)

    def no_link(a: object, b: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", no_link)  # failed/ on another mount than the outbox
    moved = move_durably(link, tmp_path / "failed")
    assert moved.is_symlink() and os.readlink(moved) == str(target) and not link.is_symlink()


def test_a_relay_that_lost_its_lease_moves_nothing_in_the_shared_spool(cfg: Config) -> None:
    """Review of issue 25: the old leader archived, held and quarantined files for 8 s after losing its lease.
    The daemon gives the spool its lease check: a fenced spool archives and quarantines nothing."""
    from onss_relay.errors import Fenced
    from onss_relay.spool import Spool

    spool = Spool(cfg.paths)
    spool.create()
    declaration = spool.outbox / "FI.DIMN.123456.20260101.00001.T.1.1"
    declaration.write_bytes(b"<Dimona/>")

    def lost() -> None:
        raise Fenced("no GO sent: its lease ended")

    spool.fence = lost
    with pytest.raises(Fenced):
        spool.quarantine([declaration], "test")
    with pytest.raises(Fenced):
        spool.archive_sets([])
    assert declaration.read_bytes() == b"<Dimona/>" and not list(spool.failed.iterdir())
