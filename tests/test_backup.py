"""`onss-relay backup` and `restore` (issue 24 item 3): a consistent copy while the daemon runs, put back owned
by the service user, refused while a daemon runs on the spool."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.helpers import Daemon, run_cli, state_of, wait_until


@pytest.mark.slow
def test_backup_while_running_then_restore_refused_while_running_and_owned_by_the_service_user(
    relay_dir: Path,
) -> None:
    config = relay_dir / "config.toml"
    spool = relay_dir / "spool"
    outbox = spool / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / fi_name(1)).write_bytes(b"<Dimona/>")
    go = "GO" + fi_name(1)[2:-2]
    daemon = Daemon(config, relay_dir / "daemon.log")
    daemon.start()
    try:
        assert wait_until(lambda: state_of(config, go) == State.SENT, 30)
        copy = relay_dir / "backup" / "journal.db"
        copy.parent.mkdir()
        r = run_cli("backup", str(copy.parent), "--config", str(config))
        assert r.returncode == 0 and "1 set(s)" in r.stdout, r.stdout + r.stderr
        with sqlite3.connect(copy) as db:  # a whole journal on its own, no -wal needed
            assert db.execute("SELECT count(*) FROM sets WHERE go_name = ?", (go,)).fetchone() == (1,)
        r = run_cli("restore", str(copy), "--config", str(config))
        assert r.returncode != 0 and "restore refused" in r.stderr and "running" in r.stderr, r.stdout + r.stderr
        assert "stop it first" in r.stderr and "does this itself" not in r.stderr, r.stderr  # it never restores
    finally:
        assert daemon.stop() == 0
    for f in spool.glob("journal.db*"):
        f.unlink()  # the journal is lost
    os.chown(spool, 65534, 65534)  # the service user owns its StateDirectory
    r = run_cli("restore", str(copy), "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    st = (spool / "journal.db").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534) and st.st_mode & 0o777 == 0o640
    assert state_of(config, go) == State.SENT


def test_restore_refuses_a_file_that_is_not_a_journal_in_one_sentence(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    junk = relay_dir / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    r = run_cli("restore", str(junk), "--config", str(config))
    assert r.returncode == 2 and f"{junk} is not a readable onss-relay journal" in r.stderr, r.stderr
    assert not (relay_dir / "spool" / "journal.db").exists()


def _mount_read_only(path: Path) -> bool:
    """Given a file, bind-mount it read-only over itself (root only); return whether that worked."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    if subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode != 0:
        return False
    subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
    return True


@pytest.mark.slow
def test_a_journal_the_relay_cannot_write_makes_it_unhealthy_with_that_reason(relay_dir: Path) -> None:
    """A journal restored by `cp` as root or on a read-only mount: today claims fail with 'attempt to write a
    readonly database' while health says ok."""
    config = relay_dir / "config.toml"
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0  # the journal exists
    journal = relay_dir / "spool" / "journal.db"
    if not _mount_read_only(journal):
        pytest.skip("needs root and mount to make the journal read-only")
    try:
        daemon = Daemon(config, relay_dir / "daemon.log")
        daemon.start()
        try:
            (relay_dir / "spool" / "outbox" / fi_name(3)).write_bytes(b"<Dimona/>")
            health = lambda: run_cli("status", "--health", "--config", str(config))  # noqa: E731
            # the reason, not only exit 1: a daemon that has not written its first report yet is unhealthy too
            assert wait_until(lambda: "read-only filesystem" in health().stdout, 30), health().stdout
            assert f"the journal {journal} is on a read-only filesystem" in health().stdout, health().stdout
        finally:
            assert daemon.stop() == 0
    finally:
        subprocess.run(["umount", str(journal)], check=True)


def test_backup_into_the_spool_is_refused_and_the_live_journal_kept(relay_dir: Path) -> None:
    """`backup spool` once replaced the live journal (and removed its -wal) under a running daemon: a set sent
    afterwards was never recorded."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / fi_name(1)).write_bytes(b"<Dimona>one</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    journal = relay_dir / "spool" / "journal.db"
    before = journal.stat().st_ino
    for dest in (relay_dir / "spool", journal, relay_dir / "spool" / "sent" / "copy.db"):
        r = run_cli("backup", str(dest), "--config", str(config))
        assert r.returncode == 2 and "inside the spool" in r.stderr, (dest, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert journal.stat().st_ino == before
    r = run_cli("backup", str(relay_dir / "nowhere" / "x.db"), "--config", str(config))
    assert r.returncode == 2 and "nowhere: no such folder" in r.stderr, r.stderr
    r = run_cli("backup", str(relay_dir / "copy.db"), "--config", str(config))
    assert r.returncode == 0 and (relay_dir / "copy.db").is_file(), r.stderr


def test_restore_into_a_spool_not_made_yet_makes_it_for_the_service_user(relay_dir: Path) -> None:
    """Into an empty spool, restore once said "the previous journal was replaced" and left a root-owned spool
    root and lock without outbox/: the service's daemon could not start on it."""
    config = relay_dir / "config.toml"
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    copy = relay_dir / "journal-copy.db"
    assert run_cli("backup", str(copy), "--config", str(config)).returncode == 0
    shutil.rmtree(relay_dir / "spool")  # a new machine: the spool is not made yet
    r = run_cli("restore", str(copy), "--config", str(config), env={"ONSS_RELAY_SERVICE_USER": "nobody"})
    assert r.returncode == 0 and "replaced" not in r.stdout and "no journal" in r.stdout, r.stdout + r.stderr
    spool = relay_dir / "spool"
    made = [spool, spool / "outbox", spool / "inbox" / "OUTTEST", spool / "relay.lock", spool / "journal.db"]
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        owners = {str(p.relative_to(relay_dir)): (p.stat().st_uid, p.stat().st_gid) for p in made}
        assert set(owners.values()) == {(nobody.pw_uid, nobody.pw_gid)}, owners
    assert all(p.exists() for p in made)


def test_a_restore_older_than_some_sends_records_those_sets_sent_from_sent_and_sends_nothing_again(
    relay_dir: Path, tmp_path: Path
) -> None:
    """Review rev6: sets the backup saw signed were sent after it; restored, they met their missing work files at
    the next upload and were set aside as "signature file missing … nothing was sent" though their GO was on the
    server. restore finds them in sent/ and records them sent; the next send puts nothing and quarantines nothing."""
    from onss_relay.config import load_config
    from onss_relay.journal import open_journal_at
    from onss_relay.pipeline import Relay
    from tests.fake_transport import FakeTransport
    from tests.test_uploader_sftp import drop_sets

    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    files: dict[tuple[str, str], bytes] = {}
    relay = Relay(cfg, connect=lambda: FakeTransport(files, []))
    try:
        gos = drop_sets(relay.spool.outbox, [(seq, "T", 1) for seq in range(1, 4)])
        relay.claim()
        relay.signer.sign_queued()
        gos += drop_sets(relay.spool.outbox, [(4, "T", 1)])
        relay.claim()  # queued, not signed yet, when the backup is taken
        assert run_cli("backup", str(tmp_path / "bk.db"), "--config", str(config)).returncode == 0
        relay.signer.sign_queued()
        assert sorted(relay.uploader.upload_pending().sent) == sorted(gos)
    finally:
        relay.close()
    r = run_cli("restore", str(tmp_path / "bk.db"), "--config", str(config))
    assert r.returncode == 0 and "4 set(s) the backup saw pending are in sent/" in r.stdout, r.stdout + r.stderr
    j = open_journal_at(cfg.paths.journal_path)
    try:
        rows = [j.get_set(go) for go in gos]
        assert all(row is not None and row.state == State.SENT and row.archived for row in rows), rows
        # the one queued at the backup gets the FS name signing gave the others
        assert [row.data.fs for row in rows if row] == [("FS" + row.parts[0][2:],) for row in rows if row]
    finally:
        j.close()
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p for p in cfg.paths.failed_dir.rglob("*") if p.is_file()]  # nothing set aside


def test_a_restore_that_cannot_read_sent_says_the_journal_is_in_place_and_to_run_it_again(
    relay_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review rev11: sent/ that cannot be read now stops the claim (never read as empty); restore reads it too, after
    the journal file is replaced: it says so, names the folder, and asks for a second restore (exit 4)."""
    from onss_relay.commands import backup as backup_command
    from onss_relay.config import load_config
    from onss_relay.errors import EXIT_LOCAL, LocalError
    from onss_relay.pipeline import Relay

    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    Relay(cfg).close()  # a journal to back up
    assert run_cli("backup", str(tmp_path / "bk.db"), "--config", str(config)).returncode == 0
    day = cfg.paths.root / "sent" / "2026-12-01"

    def unreadable(*_: object) -> list[str]:
        raise PermissionError(13, "Permission denied", str(day))

    monkeypatch.setattr(backup_command, "record_sent_found_in_sent", unreadable)
    with pytest.raises(LocalError) as caught:
        backup_command.restore(cfg, tmp_path / "bk.db", io.StringIO())
    said = str(caught.value)
    assert caught.value.exit_code == EXIT_LOCAL
    assert f"restored {cfg.paths.journal_path} from {tmp_path / 'bk.db'}" in said and str(day) in said, said
    assert "run restore again" in said and cfg.paths.journal_path.exists()
