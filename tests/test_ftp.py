"""FTP/FTPS faults: a refused folder, 421 mid-session, a truncated upload, bad login, an unknown certificate."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.errors import PermanentRemoteError, RemoteFileGone
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.transport.ftp import FtpTransport
from tests.conftest import fi_name
from tests.fixtures.ftpd import FtpServer


def drop(relay: Relay, n: int) -> list[str]:
    gos = []
    for i in range(1, n + 1):
        (relay.spool.outbox / fi_name(i)).write_bytes(b"<d>%s</d>" % (b"<x i='%d'/>\r\n" % i * 500))
        gos.append("GO" + fi_name(i)[2:-2])
    return gos


def assert_no_go_without_complete_files(server: FtpServer, relay: Relay) -> None:
    events = server.events()
    for row in relay.journal.sets_in(*State):
        go_opens = [i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.endswith("/" + row.go_name)]
        for name in row.parts + list(row.data.fs):
            good = [i for i, (ev, p) in enumerate(events) if ev == "close" and p.endswith("/" + name)]
            for g in go_opens:
                assert any(c < g for c in good), f"GO of {row.go_name} before {name} was complete"


def test_550_on_the_folder_is_a_clear_error_and_no_go(relay_dir: Path, ftpd: FtpServer) -> None:
    (ftpd.home / "INTEST").rmdir()
    relay = Relay(load_config(relay_dir / "config.toml", environ={}))
    drop(relay, 2)
    report = relay.send_once(wait_for_settle=False)
    assert isinstance(report.upload.error, PermanentRemoteError) and "refused" in str(report.upload.error)
    assert not any(ev == "open-write" and "/GO." in p for ev, p in ftpd.events())
    assert len(list(relay.spool.outbox.iterdir())) == 2
    relay.close()


def test_421_mid_session_is_retried(relay_dir: Path, ftpd: FtpServer) -> None:
    relay = Relay(load_config(relay_dir / "config.toml", environ={}))
    relay.uploader.max_wait = 0.2
    gos = drop(relay, 6)
    ftpd.fail_next_stor_with_421 = True
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.error is None and sorted(report.upload.sent) == sorted(gos)
    assert not ftpd.fail_next_stor_with_421  # it did happen
    assert_no_go_without_complete_files(ftpd, relay)
    for go in gos:
        assert sum(1 for ev, p in ftpd.events() if ev == "open-write" and p.endswith("/" + go)) == 1
    relay.close()


def test_truncated_upload_is_detected_and_sent_again_before_any_go(relay_dir: Path, ftpd: FtpServer) -> None:
    relay = Relay(load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__REMOTE__CONNECTIONS": "1"}))
    relay.uploader.max_wait = 0.2
    gos = drop(relay, 3)
    ftpd.truncate_next_upload = True
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.error is None and sorted(report.upload.sent) == sorted(gos)
    first = fi_name(1)
    assert (ftpd.home / "INTEST" / first).read_bytes() == next(relay.spool.sent.rglob(first)).read_bytes()
    assert sum(1 for ev, p in ftpd.events() if ev == "open-write" and p.endswith("/" + first)) == 2
    go_first = "GO" + first[2:-2]
    events = ftpd.events()
    go_at = next(i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.endswith("/" + go_first))
    last_fi_close = max(i for i, (ev, p) in enumerate(events) if ev == "close" and p.endswith("/" + first))
    assert last_fi_close < go_at
    relay.close()


@pytest.mark.slow
def test_bad_login_exits_3_and_check_says_so(relay_dir: Path, ftpd: FtpServer) -> None:
    (relay_dir / "keys" / "ftp.pass").write_text("wrong\n")
    (relay_dir / "spool" / "outbox").mkdir(parents=True, exist_ok=True)
    (relay_dir / "spool" / "outbox" / fi_name(1)).write_bytes(b"<x/>")
    r = subprocess.run(
        [sys.executable, "-m", "onss_relay.cli", "send", "--once", "--config", str(relay_dir / "config.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3 and "login refused" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "onss_relay.cli", "check", "--config", str(relay_dir / "config.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3 and "✗ remote" in r.stdout and "login refused" in r.stdout


def test_ftps_refuses_an_unknown_certificate(relay_dir: Path, ftpsd: FtpServer, tmp_path: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__REMOTE__CA_FILE": ""})
    with pytest.raises(PermanentRemoteError, match="certificate does not verify"):
        FtpTransport.connect(cfg.remote)
    ok = load_config(relay_dir / "config.toml", environ={})
    FtpTransport.connect(ok.remote).close()
    r = subprocess.run(
        [sys.executable, "-m", "onss_relay.cli", "check", "--config", str(relay_dir / "config.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout
    assert "✓ remote: ftps" in r.stdout


def test_a_file_taken_between_size_and_retr_is_gone_not_refused(relay_dir: Path, ftpd: FtpServer) -> None:
    """go_sending recovery reads OUT while the poller may take an answer: a 550 at RETR for a file that is no
    longer there is RemoteFileGone (skipped), not a refusal that stops the upload round (send --once exited 3)."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    (ftpd.home / "OUTTEST" / "FO.ACRF.999999.20261130.001AZ.T").write_bytes(b"<ACRF/>")
    ftpd.take_before_next_retr = True
    t = FtpTransport.connect(cfg.remote)
    try:
        with pytest.raises(RemoteFileGone):
            t.get("OUTTEST", "FO.ACRF.999999.20261130.001AZ.T", io.BytesIO(), 1 << 20)
        assert not (ftpd.home / "OUTTEST" / "FO.ACRF.999999.20261130.001AZ.T").exists()  # the race did happen
    finally:
        t.close()
