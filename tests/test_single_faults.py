"""One bad file never blocks the queue or hides a result (issue: single faults). Each test reproduces the
fault through the real CLI, over the real sshd where the transport matters."""

from __future__ import annotations

import json
from pathlib import Path

from onss_relay.config import Config, load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.pipeline import Relay
from tests.fixtures.sshd import SshServer
from tests.helpers import WITHOUT_ROOT_FILE_ACCESS, run_cli
from tests.test_uploader_sftp import drop_sets


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
    go_sending, as the daemon does; with go_landed, the GO reaches the server too. Then the process "dies"."""
    from onss_relay.transport.sftp import SftpTransport

    [go] = claimed_and_signed(cfg, [(1, "T", 1)])
    relay = Relay(cfg)
    row = relay.journal.get_set(go)
    assert row is not None
    t = SftpTransport.connect(cfg.remote)
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
    r = run_cli("send", "--once", "--config", config)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert not any(ev == "open-write" and p.endswith("/" + go) for ev, p in sshd.events()), "GO put again"
    history = open_journal_at(sftp_cfg.paths.journal_path).history(go)
    assert history[-1][1] == "sent" and f"OUTTEST/{acrf} answers the set" in (history[-1][2] or "")
    run_cli("poll", "--once", "--config", config)
    assert journal_row(sftp_cfg, go).state == State.ACKNOWLEDGED
