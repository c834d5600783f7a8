"""One bad file never blocks the queue or hides a result (issue: single faults). Each test reproduces the
fault through the real CLI, over the real sshd where the transport matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.pipeline import Relay
from tests.conftest import fi_name
from tests.fixtures.sshd import SshServer
from tests.helpers import WITHOUT_ROOT_FILE_ACCESS, Daemon, run_cli, state_of, wait_until
from tests.test_uploader_sftp import drop_sets

pytestmark = pytest.mark.slow  # black-box: the real CLI as separate processes, many against a real sshd


def claimed_and_signed(cfg: Config, sets: list[tuple[int, str, int]]) -> list[str]:
    """Given sets to drop, claim and sign them (as a daemon would before a crash); return their GO names."""
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, sets)
        relay.claim()
        relay.signer.sign_queued()
        assert {relay.journal.get_set(go).state for go in gos} == {State.SIGNED}  # type: ignore[union-attr]
        return gos
    finally:
        relay.close()


def journal_row(cfg: Config, go: str):  # type: ignore[no-untyped-def]
    j = open_journal_at(cfg.paths.journal_path)
    try:
        return j.get_set(go)
    finally:
        j.close()


def reason_of(cfg: Config, name: str) -> dict[str, str]:
    return json.loads((cfg.paths.failed_dir / f"{name}.reason.json").read_text())  # type: ignore[no-any-return]


def test_a_declaration_gone_after_its_claim_is_quarantined_and_the_others_are_sent(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    gos = claimed_and_signed(sftp_cfg, [(1, "T", 1), (2, "T", 2), (3, "T", 1)])
    gone = journal_row(sftp_cfg, gos[1]).parts[1]
    (sftp_cfg.paths.outbox_dir / gone).unlink()  # an operator deleted part 2 of set 2
    r = run_cli("send", "--once", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "sent 2 set(s), quarantined 1" in r.stdout
    for go in (gos[0], gos[2]):
        assert journal_row(sftp_cfg, go).state == State.SENT and (sshd.home / "INTEST" / go).exists()
    row = journal_row(sftp_cfg, gos[1])
    assert row.state == State.FAILED and "vanished" in row.reason and gone in row.reason
    assert not (sshd.home / "INTEST" / gos[1]).exists()
    kept = row.parts[0]  # the part still there is kept in failed/ with the reason
    assert reason_of(sftp_cfg, kept)["reason"] == "declaration vanished from the outbox"


def test_a_quarantine_cut_short_by_a_crash_is_recorded_with_its_reason(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    gos = claimed_and_signed(sftp_cfg, [(1, "T", 1), (2, "T", 1)])
    relay = Relay(sftp_cfg)
    row = relay.journal.get_set(gos[0])
    assert row is not None
    # what quarantine_claimed does before its journal record: a SIGKILL there leaves exactly this
    relay.spool.quarantine(relay.spool.outbox_files(row), "declaration changed after it was claimed", "FI: 3 bytes")
    relay.close()
    assert journal_row(sftp_cfg, gos[0]).state == State.SIGNED
    r = run_cli("send", "--once", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    failed = journal_row(sftp_cfg, gos[0])
    assert failed.state == State.FAILED and failed.reason.startswith("declaration changed after it was claimed")
    assert "found in failed/ after a restart" in failed.reason
    assert journal_row(sftp_cfg, gos[1]).state == State.SENT


def test_a_signature_file_gone_from_work_quarantines_its_set_only(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    gos = claimed_and_signed(sftp_cfg, [(1, "T", 1), (2, "T", 1)])
    fs = journal_row(sftp_cfg, gos[0]).data.fs[0]
    (sftp_cfg.paths.work_dir / fs).unlink()
    r = run_cli("send", "--once", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    row = journal_row(sftp_cfg, gos[0])
    assert row.state == State.FAILED and "signature file missing" in row.reason
    assert journal_row(sftp_cfg, gos[1]).state == State.SENT


def test_an_unreadable_declaration_goes_to_failed_and_the_others_are_signed_and_sent(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    outbox = cfg.paths.outbox_dir
    outbox.mkdir(parents=True, exist_ok=True)
    gos = drop_sets(outbox, [(1, "T", 1), (2, "T", 1), (3, "T", 1)])
    locked = next(p.name for p in outbox.iterdir() if p.name.startswith("FI" + gos[1][2:]))
    (outbox / locked).chmod(0)
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"), wrapper=WITHOUT_ROOT_FILE_ACCESS)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "sent 2 set(s), quarantined 1" in r.stdout
    assert reason_of(cfg, locked)["reason"] == "cannot read the declaration"
    assert "Permission denied" in reason_of(cfg, locked)["detail"]
    row = journal_row(cfg, gos[1])
    assert row.state == State.FAILED and "cannot read the declaration" in row.reason
    assert {journal_row(cfg, go).state for go in (gos[0], gos[2])} == {State.SENT}


def test_an_over_size_answer_is_never_downloaded_and_status_shows_it_left_on_the_server(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    config = str(sftp_dir / "config.toml")
    big, small = "FO.NOTI.999999.20261124.0BIG1.T", "FO.ACRF.999999.20261124.00002.T"
    (sshd.home / "OUTTEST" / big).write_bytes(b"<x/>" * 1000)
    (sshd.home / "OUTTEST" / small).write_bytes(b"<ACRF/>")
    env = {"ONSS_RELAY__POLL__MAX_SIZE": "2000"}
    for _ in range(2):
        r = run_cli("poll", "--once", "--config", config, env=env)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    reads = [p for ev, p in sshd.events() if ev == "open-read"]
    assert not any(p.endswith("/" + big) for p in reads), "an over-size answer was downloaded"
    assert any(p.endswith("/" + small) for p in reads)
    assert (sshd.home / "OUTTEST" / big).exists() and not (sshd.home / "OUTTEST" / small).exists()
    assert r.stderr.count("response_too_large") == 1 or "response_too_large" in r.stderr
    status = run_cli("status", "--config", config, env=env)
    assert "answers left on the server (1):" in status.stdout and f"OUTTEST/{big}  4000 bytes" in status.stdout
    doc = json.loads(run_cli("status", "--json", "--config", config, env=env).stdout)
    assert doc["left_on_server"] == [{"file": f"OUTTEST/{big}", "size": 4000, "why": "larger than poll.max_size"}]
    (sshd.home / "OUTTEST" / big).unlink()  # handled by hand: status forgets it at the next poll
    run_cli("poll", "--once", "--config", config)
    assert "left on the server" not in run_cli("status", "--config", config).stdout


def go_sending_over_sftp(cfg: Config, sshd: SshServer, go_landed: bool) -> str:
    """Given a spool with one claimed and signed set, upload its FI and FS over the real sshd and commit
    go_sending, as the daemon does; with go_landed, the GO reaches the server too. Then the process "dies",
    leaving the spool's in-flight marker as a killed daemon does."""
    from onss_relay.stages.unclean_stop import InFlightMarker
    from onss_relay.transport.sftp import SftpTransport

    [go] = claimed_and_signed(cfg, [(1, "T", 1)])
    relay = Relay(cfg)
    row = relay.journal.get_set(go)
    assert row is not None
    t = SftpTransport.connect(cfg.remote)
    InFlightMarker(cfg.paths.root).set()
    try:
        relay.journal.transition(go, State.UPLOADING)
        for name in [*row.parts, *row.data.fs]:
            with (cfg.paths.work_dir / name).open("rb") as src:  # the signed copies
                t.put(src, "INTEST", name)
        relay.journal.transition(go, State.GO_SENDING)
        if go_landed:
            t.put_bytes(b"", "INTEST", go)
    finally:
        t.close()
        relay.close()
    return go


def test_an_answer_polled_before_upload_recovery_gives_the_set_its_result(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    from onss_relay.simulator import Simulator
    from tests.conftest import SENDER

    config = str(sftp_dir / "config.toml")
    go = go_sending_over_sftp(sftp_cfg, sshd, go_landed=True)
    Simulator(sshd.home, SENDER).process()  # the transfer point consumed the set and answered (ACRF + notification)
    assert not (sshd.home / "INTEST" / go).exists()
    r = run_cli("poll", "--once", "--config", config)  # a cron'd poll runs before the daemon's recovery
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    row = journal_row(sftp_cfg, go)
    assert row.state == State.NOTIFIED and row.ticket, (row.state, row.ticket)
    history = [h[2] or "" for h in open_journal_at(sftp_cfg.paths.journal_path).history(go)]
    assert any("the GO was consumed" in h for h in history)
    r = run_cli("send", "--once", "--config", config)  # recovery now has nothing to re-send
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert not (sshd.home / "INTEST" / go).exists(), "the GO was put again after its answer"
    row = journal_row(sftp_cfg, go)
    assert row.state == State.NOTIFIED and row.archived
    assert json.loads(run_cli("status", "--json", "--config", config).stdout)["unlinked_responses"] == []


def test_go_sending_recovery_finds_the_answer_in_out_and_does_not_put_the_go_again(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    from onss_relay.simulator import Verdict, acrf_xml

    config = str(sftp_dir / "config.toml")
    go = go_sending_over_sftp(sftp_cfg, sshd, go_landed=False)
    # the transfer point took the GO and answered; the FI and FS are still in INTEST (removed later)
    acrf = "FO.ACRF.999999.20261124.00007.T"
    (sshd.home / "OUTTEST" / acrf).write_bytes(acrf_xml(Verdict(go, "INTEST", (), "0380579A83Q1Z")))
    (sshd.home / "OUTTEST" / ("GO" + acrf[2:])).write_bytes(b"")
    r = run_cli("send", "--once", "--config", config)  # after an unclean stop: uncertain for the quiet period
    assert r.returncode == 5 and "when the relay stopped uncleanly" in r.stderr, (r.stdout, r.stderr)
    time.sleep(sftp_cfg.remote.quiet_period + 0.2)
    r = run_cli("send", "--once", "--config", config)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert not any(ev == "open-write" and p.endswith("/" + go) for ev, p in sshd.events()), "GO put again"
    history = open_journal_at(sftp_cfg.paths.journal_path).history(go)
    assert history[-1][1] == "sent" and f"OUTTEST/{acrf} answers the set" in (history[-1][2] or "")
    run_cli("poll", "--once", "--config", config)
    assert journal_row(sftp_cfg, go).state == State.ACKNOWLEDGED


WRITER = """
import sys, time
path, pause = sys.argv[1], float(sys.argv[2])
body = b"<?xml version='1.0'?>\\r\\n<DmfA>\\r\\n" + b"<Worker>x</Worker>\\r\\n" * 400 + b"</DmfA>\\r\\n"
with open(path, "wb") as f:
    f.write(body[:43]); f.flush()
    print("paused", flush=True)
    time.sleep(pause)  # longer than the settle delay and the 5 s event fallback: the file looks still
    f.write(body[43:])
"""


@pytest.mark.slow
@pytest.mark.parametrize("settle", ["0s", "1s"])
def test_a_writer_that_pauses_with_its_file_open_is_never_sent_half_written(relay_dir: Path, settle: str) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    log = relay_dir / "daemon.log"
    daemon = Daemon(relay_dir / "config.toml", log, env={"ONSS_RELAY__WATCH__SETTLE": settle})
    fi = cfg.paths.outbox_dir / fi_name(1)
    daemon.start()
    try:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(fi), "6"], stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdout.readline().strip() == "paused"
        assert writer.wait(30) == 0
        whole = b"<?xml version='1.0'?>\r\n<DmfA>\r\n" + b"<Worker>x</Worker>\r\n" * 400 + b"</DmfA>\r\n"
        go = "GO" + fi_name(1)[2:-2]
        assert wait_until(lambda: state_of(relay_dir / "config.toml", go) == State.SENT, 30), log.read_text()[-2000:]
    finally:
        assert daemon.stop() == 0
    assert (relay_dir / "remote" / "INTEST" / fi_name(1)).read_bytes() == whole
    [archived] = cfg.paths.sent_dir.rglob(fi_name(1))
    assert archived.read_bytes() == whole


def test_truncated_xml_waits_then_is_quarantined_with_a_reason(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    config = str(relay_dir / "config.toml")
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / fi_name(1)).write_bytes(b"<?xml version='1.0'?>\r\n<DmfA>\r\n<Worker>x</Wor")
    (cfg.paths.outbox_dir / fi_name(2)).write_bytes(b"<DmfA/>")
    env = {"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "1h", "ONSS_RELAY__WATCH__SETTLE": "0s"}
    r = run_cli("send", "--once", "--config", config, env=env)
    assert r.returncode == 0 and "sent 1 set(s), quarantined 0" in r.stdout, r.stdout + r.stderr
    assert (cfg.paths.outbox_dir / fi_name(1)).exists()  # waits for its writer
    # unchanged past watch.incomplete_after, counted from when this run first saw it (a settle wait later)
    env = {"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "500ms", "ONSS_RELAY__WATCH__SETTLE": "1s"}
    r = run_cli("send", "--once", "--config", config, env=env)
    assert r.returncode == 1 and "quarantined 1" in r.stdout and "Traceback" not in r.stderr, r.stderr
    why = reason_of(cfg, fi_name(1))
    assert why["reason"] == "not well-formed XML"
    assert "line 3" in why["detail"] and fi_name(1) in why["detail"]
    assert not (relay_dir / "remote" / "INTEST" / fi_name(1)).exists()


def test_bytes_that_differ_from_the_signed_ones_stop_that_set_before_its_go(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    gos = claimed_and_signed(sftp_cfg, [(1, "T", 1), (2, "T", 1), (3, "T", 1)])
    row = journal_row(sftp_cfg, gos[1])
    copy = sftp_cfg.paths.work_dir / row.parts[0]
    data = bytearray(copy.read_bytes())
    data[-20] ^= 1  # same size, same place: only the digest tells
    mtime = copy.stat().st_mtime_ns
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(mtime, mtime))
    r = run_cli("send", "--once", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    failed = journal_row(sftp_cfg, gos[1])
    assert failed.state == State.FAILED and "declaration changed while it was being sent" in failed.reason
    assert not (sshd.home / "INTEST" / gos[1]).exists(), "a GO went out for bytes that were not signed"
    for go in (gos[0], gos[2]):
        assert journal_row(sftp_cfg, go).state == State.SENT and (sshd.home / "INTEST" / go).exists()


# -- clear errors, local checks (items 7 and 8) --------------------------------------------------------


def test_check_local_passes_while_the_remote_is_down_and_the_unit_uses_it(sftp_dir: Path, sshd: SshServer) -> None:
    config = str(sftp_dir / "config.toml")
    sshd.stop()
    local = run_cli("check", "--local", "--config", config)
    assert local.returncode == 0, local.stdout + local.stderr
    assert "remote: not checked (--local)" in local.stdout
    full = run_cli("check", "--config", config)
    assert full.returncode == 3 and "✗ remote" in full.stdout
    unit = (Path(__file__).parents[1] / "systemd" / "onss-relay.service").read_text()
    [pre] = [ln for ln in unit.splitlines() if ln.startswith("ExecStartPre=")]
    assert " check --local " in pre


def test_a_malformed_known_hosts_line_is_a_configuration_error_naming_the_line(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    assert sftp_cfg.remote.known_hosts is not None
    good = sftp_cfg.remote.known_hosts.read_text()
    sftp_cfg.remote.known_hosts.write_text("# ours\n" + good + "transfer.example ssh-ed25519 AAAA-not-base64!\n")
    config = str(sftp_dir / "config.toml")
    # a set to send: send --once connects for it (an empty outbox connects only while signing still runs)
    drop_sets(sftp_cfg.paths.outbox_dir, [(1, "T", 1)])
    for command in (["check"], ["send", "--once"], ["poll", "--once"]):
        r = run_cli(*command, "--config", config)
        out = r.stdout + r.stderr
        assert r.returncode == 2, (command, out)
        assert "line 3: not a known_hosts line" in out and str(sftp_cfg.remote.known_hosts) in out
        assert "Traceback" not in out


def test_a_full_disk_is_a_local_error_in_one_sentence_and_nothing_is_lost(relay_dir: Path, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs: {r.stderr.strip()}"
    try:
        config = relay_dir / "config.toml"
        config.write_text(config.read_text().replace('root = "spool"', f'root = "{mount / "spool"}"'))
        cfg = load_config(config, environ={})
        cfg.paths.outbox_dir.mkdir(parents=True)
        body = b"<DmfA>" + b"<W/>" * 40_000 + b"</DmfA>"  # 160 KB: a few fit, their signed copies do not all
        for seq in range(1, 6):
            (cfg.paths.outbox_dir / fi_name(seq)).write_bytes(body)
        r = run_cli("send", "--once", "--config", str(config))
        assert r.returncode == 4, r.stdout + r.stderr
        assert "disk full" in r.stderr and "Traceback" not in r.stderr
        kept = {p.name for d in (cfg.paths.outbox_dir, cfg.paths.sent_dir) for p in d.rglob("FI.*")}
        assert kept == {fi_name(seq) for seq in range(1, 6)}  # each still waiting, or sent before the disk filled
        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)  # the sysadmin makes room
        r = run_cli("send", "--once", "--config", str(config))
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(list((relay_dir / "remote" / "INTEST").glob("GO.*"))) == 5
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_status_works_for_a_user_who_can_only_read_the_spool(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / fi_name(1)).write_bytes(b"<DmfA/>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    for p in [relay_dir, *relay_dir.rglob("*")]:  # the spool belongs to the relay's user; others may read it
        os.chown(p, 65534, 65534, follow_symlinks=False)
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    before = {p: p.stat().st_mtime_ns for p in cfg.paths.root.rglob("*")}
    r = run_cli("status", "--config", str(config), wrapper=WITHOUT_ROOT_FILE_ACCESS)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "GO" + fi_name(1)[2:-2] in r.stdout and "sent" in r.stdout
    r = run_cli("status", "--json", "--config", str(config), wrapper=WITHOUT_ROOT_FILE_ACCESS)
    assert r.returncode == 0 and json.loads(r.stdout)["counts"] == {"sent": 1}
    assert {p: p.stat().st_mtime_ns for p in cfg.paths.root.rglob("*")} == before  # nothing written


def test_a_damaged_journal_is_one_sentence(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    cfg.paths.journal_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.paths.journal_path.write_bytes(b"this is not a database" * 100)
    for command in (["status"], ["send", "--once"]):
        r = run_cli(*command, "--config", str(config))
        assert r.returncode in (2, 4) and "Traceback" not in r.stderr, (command, r.stderr)
        assert str(cfg.paths.journal_path) in r.stderr or "journal" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_an_ssh_key_the_relay_cannot_read_is_a_local_error_that_check_local_reports(
    sftp_dir: Path, sftp_cfg: Config, sshd: SshServer
) -> None:
    key = sftp_dir / "unreadable_id_rsa"
    assert sftp_cfg.remote.private_key is not None
    key.write_bytes(sftp_cfg.remote.private_key.read_bytes())
    key.chmod(0o600)
    os.chown(key, 65534, 65534)  # another user's key, mode 0600: what `init` + a wrong chown used to give
    config = sftp_dir / "config.toml"
    config.write_text(config.read_text().replace(str(sftp_cfg.remote.private_key), str(key)))
    # a set to send: send --once connects for it (an empty outbox connects only while signing still runs)
    drop_sets(sftp_cfg.paths.outbox_dir, [(1, "T", 1)])
    for command in (["check", "--local"], ["send", "--once"]):
        r = run_cli(*command, "--config", str(config), wrapper=WITHOUT_ROOT_FILE_ACCESS)
        out = r.stdout + r.stderr
        assert r.returncode == 2, (command, out)
        assert "permission denied" in out and "wrong passphrase" not in out and "Traceback" not in out


def fill(folder: Path) -> Path:
    """Given a folder on a small filesystem, write a file until the disk is full; return it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        return filler
    finally:
        os.close(fd)


def test_a_full_journal_is_a_local_error_exit_4_never_remote(relay_dir: Path, tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs: {r.stderr.strip()}"
    try:
        config = relay_dir / "config.toml"
        config.write_text(config.read_text().replace('root = "spool"', f'root = "{mount / "spool"}"'))
        cfg = load_config(config, environ={})
        gos = claimed_and_signed(cfg, [(1, "T", 1), (2, "T", 1)])
        filler = fill(mount)  # the uploader's next journal commit finds no room
        r = run_cli("send", "--once", "--config", str(config))
        assert r.returncode == 4, r.stdout + r.stderr
        assert "disk full" in r.stderr and "journal" in r.stderr, r.stderr
        assert "remote" not in r.stderr and "upload_crashed" not in r.stderr and "Traceback" not in r.stderr
        filler.unlink()
        r = run_cli("send", "--once", "--config", str(config))
        assert r.returncode == 0, r.stdout + r.stderr
        assert all(state_of(config, go) == State.SENT for go in gos)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_busy_journal_is_a_local_error_exit_4_never_remote(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    claimed_and_signed(cfg, [(1, "T", 1)])
    holder = subprocess.Popen(  # another process keeps the journal's write lock longer than the busy timeout
        ["sqlite3", str(cfg.paths.journal_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "locked"
    try:
        r = run_cli("send", "--once", "--config", str(config))
    finally:
        holder.stdin.write("ROLLBACK;\n.quit\n")
        holder.stdin.flush()
        holder.wait(10)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "locked by another process" in r.stderr and "journal" in r.stderr, r.stderr
    assert "remote" not in r.stderr and "upload_crashed" not in r.stderr and "Traceback" not in r.stderr


def test_send_once_never_says_quarantined_0_when_it_exits_1(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    cfg = load_config(config, environ={})
    gos = claimed_and_signed(cfg, [(1, "T", 1), (2, "T", 1)])
    gone = journal_row(cfg, gos[0]).parts[0]
    (cfg.paths.outbox_dir / gone).unlink()  # its only file deleted after its claim: nothing to move to failed/
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 1 and "sent 1 set(s), quarantined 1" in r.stdout, r.stdout + r.stderr
    assert journal_row(cfg, gos[0]).state == State.FAILED
