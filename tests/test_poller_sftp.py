"""The poller against a real sshd: durable mirroring, remote delete only after, crashes, hostile names, full cycle."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onss_relay.config import Config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.simulator import Simulator, notification_xml
from tests.conftest import SENDER
from tests.fixtures.sshd import SshServer
from tests.helpers import run_cli


def put_response(out: Path, name: str, content: bytes, go: bool = True) -> None:
    (out / name).write_bytes(content)
    if go:
        fields = name.split(".")
        go_name = ".".join(["GO", *fields[1:7]]) if len(fields) > 7 else "GO" + name[2:]
        (out / go_name).write_bytes(b"")


def test_responses_are_mirrored_byte_identical_then_deleted(sftp_cfg: Config, sshd: SshServer) -> None:
    out = sshd.home / "OUT"
    originals = {}
    for part in (1, 2, 3):  # a multi-part Dimona answer, one GO for all parts
        name = f"FO.DMNO.999999.20261124.00007.R.3.{part}"
        originals[name] = f"<DimonaNotification part='{part}'/>\r\n".encode() * 1000
        (out / name).write_bytes(originals[name])
    (out / "GO.DMNO.999999.20261124.00007.R.3").write_bytes(b"")
    originals["GO.DMNO.999999.20261124.00007.R.3"] = b""
    co = gzip.compress(notification_xml("0ABCDEFGHIJKL", SENDER, "DMFA001"))
    put_response(out, "CO.NOTI.999999.20261124.00008.R", co)
    originals["CO.NOTI.999999.20261124.00008.R"] = co
    originals["GO.NOTI.999999.20261124.00008.R"] = b""
    relay = Relay(sftp_cfg)
    report = relay.poll_once()
    assert len(report.mirrored) == len(originals) and len(report.deleted) == len(originals)
    assert list(out.iterdir()) == []
    for name, content in originals.items():
        assert (relay.spool.inbox / "OUT" / name).read_bytes() == content
    kinds = {r.name: r.kind for r in (relay.journal.get_response("OUT", n) for n in originals) if r}
    assert kinds["CO.NOTI.999999.20261124.00008.R"] == "notification-waiting"  # decompressed, parsed, no set yet
    assert kinds["FO.DMNO.999999.20261124.00007.R.3.1"] == "other"
    events = sshd.events()
    for name in originals:  # each remote file read completely before it was removed
        close = max(i for i, (ev, p) in enumerate(events) if ev == "close" and p.endswith("/" + name))
        remove = next(i for i, (ev, p) in enumerate(events) if ev == "remove" and p.endswith("/" + name))
        assert close < remove
    relay.close()


def test_hostile_names_on_a_real_server(sftp_cfg: Config, sshd: SshServer) -> None:
    out = sshd.home / "OUTTEST"
    hostile = [
        "..",
        "..FO.ACRF.999999.20260101.00001.T",
        "FO.ACRF.999999.20260101.00001.T\x1b[2J",
        "FO.ACRF.999999.20260101.00001.T " + "A" * 200,
        "fo.acrf.999999.20260101.00001.t",
    ]
    for name in hostile[1:]:
        (out / name).write_bytes(b"x")
    (out / "FO.ACRF.999999.20260101.00002.T").mkdir()
    os.symlink("/etc/shadow", out / "FO.ACRF.999999.20260101.00003.T")
    (out / "GO.ACRF.999999.20260101.00003.T").write_bytes(b"")
    relay = Relay(sftp_cfg)
    report = relay.poll_once()
    assert len(report.suspicious) == 6 and report.mirrored == ["OUTTEST/GO.ACRF.999999.20260101.00003.T"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        hostile[1:] + ["FO.ACRF.999999.20260101.00002.T", "FO.ACRF.999999.20260101.00003.T"]
    )
    inbox_files = [p for p in relay.spool.paths.root.rglob("*") if p.is_file()]
    assert all(relay.spool.paths.root in p.parents for p in inbox_files)
    assert not any("shadow" in p.read_text(errors="replace") for p in relay.spool.inbox.rglob("*") if p.is_file())
    relay.close()


@pytest.mark.slow
def test_sigkill_during_download_loses_and_deletes_nothing(sftp_dir: Path, sftp_cfg: Config, sshd: SshServer) -> None:
    out = sshd.home / "OUT"
    big = "FO.DMNO.999999.20261124.00009.R"
    with (out / big).open("wb") as f:
        for _ in range(300):
            f.write(os.urandom(1 << 20))
    (out / ("GO" + big[2:])).write_bytes(b"")
    proc = subprocess.Popen(
        [sys.executable, "-m", "onss_relay.cli", "poll", "--once", "--config", str(sftp_dir / "config.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    inbox = sftp_cfg.paths.inbox_dir / "OUT"
    deadline = time.monotonic() + 30
    temp = sftp_cfg.paths.inbox_dir / ".downloading" / "OUT" / big
    while time.monotonic() < deadline and not temp.exists():
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / big).stat().st_size == 300 << 20  # still on the server
    assert not (inbox / big).exists()  # no partial file under the real name
    relay = Relay(sftp_cfg)  # a restart removes our own stale temp file and mirrors it whole
    assert not temp.exists()
    relay.poll_once()
    assert (inbox / big).stat().st_size == 300 << 20 and not (out / big).exists()
    relay.close()


def test_crash_between_rename_and_remote_delete_does_not_download_twice(sftp_dir: Path, sshd: SshServer) -> None:
    from onss_relay.config import load_config

    out = sshd.home / "OUTTEST"
    put_response(out, "FO.ACRF.999999.20260101.00001.T", b"<ACRF/>")
    keep = Relay(load_config(sftp_dir / "config.toml", environ={"ONSS_RELAY__POLL__DELETE_REMOTE": "false"}))
    keep.poll_once()  # mirrored and committed; "crashed" before deleting
    keep.close()
    reads_before = sum(1 for ev, p in sshd.events() if ev == "open-read")
    relay = Relay(load_config(sftp_dir / "config.toml", environ={}))
    report = relay.poll_once()
    assert report.mirrored == [] and len(report.deleted) == 2 and list(out.iterdir()) == []
    assert sum(1 for ev, p in sshd.events() if ev == "open-read") == reads_before
    relay.close()


@pytest.mark.slow
def test_full_cycle_over_sftp(sftp_dir: Path, sshd: SshServer) -> None:
    """submit → sign → upload → the simulator answers on the server side → poll → status."""
    config = str(sftp_dir / "config.toml")
    good = sftp_dir / "dmfa.xml"
    good.write_bytes(b"<DmfA>\r\n<!-- SIMULATE-ANOMALY:00024-152:NB -->\r\n</DmfA>\r\n")
    # a DmfA declaration test is S (in T a DmfA is only a circuit test: an ACRF, no notification)
    names = run_cli("submit", str(good), "--app", "DMFA", "--env", "S", "--config", config).stdout.split()
    other = run_cli("submit", str(good), "--app", "DIMN", "--env", "T", "--config", config).stdout.split()
    assert run_cli("send", "--once", "--config", config).returncode == 0
    (sshd.home / "INTEST" / other[0]).write_bytes(b"<tampered/>")  # its signature will not verify: ACRF-125
    Simulator(sshd.home, SENDER).process()
    assert run_cli("poll", "--once", "--config", config).returncode == 0
    status = json.loads(run_cli("status", "--json", "--config", config).stdout)
    by_set = {s["set"]: s for s in status["sets"]}
    accepted = by_set["GO" + names[0][2:-2]]
    refused = by_set["GO" + other[0][2:-2]]
    assert accepted["state"] == "notified" and len(accepted["ticket"]) == 13
    [note] = accepted["notifications"]  # each anomaly stored once: under its worker (Form), counted on the notification
    assert note["workers"][0]["anomalies"][0]["error_id"] == "00024-152" and note["anomalies_by_code"] == {
        "00024-152": 1
    }
    assert accepted["outcome"] == "accepted_with_anomalies" and refused["outcome"] == "refused"
    assert refused["state"] == "refused"
    assert refused["acrf"]["errors"] == [{"code": "ACRF-125", "description": "invalid signature"}]
    table = run_cli("status", "--config", config).stdout
    assert "ACRF-125 invalid signature" in table and accepted["ticket"] in table
    result = json.loads((sftp_dir / "spool" / "results" / f"{accepted['set']}.json").read_text())
    assert result["state"] == "notified" and result["sent_dir"]
    assert State.NOTIFIED == "notified"


def test_poll_keeps_many_gets_in_flight_and_deletes_only_durable_copies(sftp_dir: Path, sshd: SshServer) -> None:
    """Issue 27: `poll --once` downloads a batch's files together (the server sees the next files opened before
    the first is closed), yet every remote file is removed only after it was read whole and is in the inbox."""
    out = sshd.home / "OUTTEST"
    names = []
    for i in range(1, 21):
        name = f"FO.NOTI.999999.20261124.{i:05d}.T"
        put_response(out, name, notification_xml(f"0TICKET{i:06d}", SENDER, "DMFA001") * 20)
        names += [name, "GO" + name[2:]]
    r = run_cli("poll", "--once", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 0, r.stderr
    assert list(out.iterdir()) == []
    inbox = sftp_dir / "spool" / "inbox" / "OUTTEST"
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == sorted(names)
    events = [(ev, p.rsplit("/", 1)[-1]) for ev, p in sshd.events() if "/OUTTEST/" in p]
    opens = [i for i, (ev, _) in enumerate(events) if ev == "open-read"]
    first_close = next(i for i, (ev, _) in enumerate(events) if ev == "close")
    assert sum(1 for i in opens if i < first_close) >= 10  # ten files open at once at least
    for name in names:  # each removed after it was read whole
        close = max(i for i, e in enumerate(events) if e == ("close", name))
        assert close < events.index(("remove", name))


def test_a_start_looks_for_stale_downloads_only_where_they_can_be(
    sftp_cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 29: a start removes the temp files a killed poll left (inbox/.downloading/) without listing the
    inbox folders, which hold every answer kept; a person's own hidden file there is not touched. (The first
    start of a spool lists them once, for the temp files of older versions: poll_leftovers.py.)"""
    inbox = sftp_cfg.paths.inbox_dir
    for folder in ("OUT", "OUTTEST"):
        (inbox / folder).mkdir(parents=True, exist_ok=True)
    (inbox / "OUT" / ".notes.part").write_bytes(b"a person's file")
    Relay(sftp_cfg).close()  # the first start: its one sweep of the inbox folders
    stale = inbox / ".downloading" / "OUTTEST" / "FO.ACRF.999999.20261124.00002.T"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    listed: list[str] = []
    real_scandir, real_listdir = os.scandir, os.listdir
    monkeypatch.setattr(os, "scandir", lambda p=".": listed.append(os.fspath(p)) or real_scandir(p))
    monkeypatch.setattr(os, "listdir", lambda p=".": listed.append(os.fspath(p)) or real_listdir(p))
    relay = Relay(sftp_cfg)
    monkeypatch.undo()
    relay.close()
    assert not stale.exists()
    assert (inbox / "OUT" / ".notes.part").exists()
    assert not {str(inbox / f) for f in ("OUT", "OUTTEST", "OUTTEST-S")} & {p.rstrip("/") for p in listed}, listed
