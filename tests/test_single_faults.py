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
