"""`onss-relay requeue` never overwrites, and a requeue cut short is completed or undone by the next command
(issue 22, item 4). Black-box: the real CLI as separate processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from onss_relay.journal import State
from tests.conftest import fi_name
from tests.helpers import run_cli, state_of

pytestmark = pytest.mark.slow  # several CLI processes each

ONLY_T = {"ONSS_RELAY__WATCH__ENVIRONMENTS": '["T"]'}


def quarantined_set(relay_dir: Path, parts: int = 2) -> tuple[Path, list[str]]:
    """Drop a set in environment S while only T is allowed: it is quarantined. Return the config and its parts."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    names = [fi_name(1, env="S", total=parts, part=i) for i in range(1, parts + 1)]
    for n in names:
        (outbox / n).write_bytes(b"<DmfA>first attempt</DmfA>")
    assert run_cli("send", "--once", "--config", str(config), env=ONLY_T).returncode == 1
    return config, names


def test_requeue_refuses_to_overwrite_a_corrected_declaration_in_the_outbox(relay_dir: Path) -> None:
    config, parts = quarantined_set(relay_dir)
    outbox, failed = relay_dir / "spool" / "outbox", relay_dir / "spool" / "failed"
    (outbox / parts[0]).write_bytes(b"<DmfA>corrected</DmfA>")
    r = run_cli("requeue", parts[0], "--config", str(config))
    assert r.returncode == 2 and "never overwrites" in r.stderr and parts[0] in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (outbox / parts[0]).read_bytes() == b"<DmfA>corrected</DmfA>"
    assert sorted(p.name for p in outbox.iterdir()) == [parts[0]]  # nothing of the old set came back
    for n in parts:
        assert (failed / n).read_bytes() == b"<DmfA>first attempt</DmfA>" and (failed / f"{n}.reason.json").exists()


def crash_mid_requeue(relay_dir: Path, staged: list[str]) -> None:
    """Leave the spool as a requeue killed after staging ``staged`` leaves it (the rest still in failed/)."""
    outbox, failed = relay_dir / "spool" / "outbox", relay_dir / "spool" / "failed"
    for n in staged:
        os.rename(failed / n, outbox / f".{n}.requeue.tmp")


def test_a_requeue_cut_short_is_completed_by_the_next_requeue(relay_dir: Path) -> None:
    config, parts = quarantined_set(relay_dir)
    crash_mid_requeue(relay_dir, parts[:1])
    r = run_cli("requeue", parts[1], "--config", str(config))
    assert r.returncode == 0, r.stderr  # not "nothing to requeue": the staged part is found and finished
    outbox, failed = relay_dir / "spool" / "outbox", relay_dir / "spool" / "failed"
    assert sorted(p.name for p in outbox.iterdir()) == parts and list(failed.iterdir()) == []


def test_a_requeue_cut_short_is_completed_by_send_at_start(relay_dir: Path) -> None:
    config, parts = quarantined_set(relay_dir)
    crash_mid_requeue(relay_dir, parts)
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    assert state_of(config, "GO" + parts[0][2:-2]) == State.SENT
    assert list((relay_dir / "spool" / "failed").iterdir()) == []


def test_a_requeue_cut_short_is_undone_when_a_file_of_that_name_arrived(relay_dir: Path) -> None:
    config, parts = quarantined_set(relay_dir)
    crash_mid_requeue(relay_dir, parts[:1])
    outbox, failed = relay_dir / "spool" / "outbox", relay_dir / "spool" / "failed"
    (outbox / parts[0]).write_bytes(b"<DmfA>corrected</DmfA>")
    r = run_cli("requeue", parts[0], "--config", str(config))
    assert r.returncode == 2 and "never overwrites" in r.stderr, r.stderr
    assert (outbox / parts[0]).read_bytes() == b"<DmfA>corrected</DmfA>"
    assert (failed / parts[0]).read_bytes() == b"<DmfA>first attempt</DmfA>"  # undone, not lost
    assert not list(outbox.glob(".*requeue.tmp"))


def test_a_set_refused_again_shows_the_new_reason(relay_dir: Path) -> None:
    config, parts = quarantined_set(relay_dir, parts=1)
    go = "GO" + parts[0][2:-2]
    assert "environment not allowed" in run_cli("status", go, "--config", str(config)).stdout
    (relay_dir / "spool" / "failed" / parts[0]).write_bytes(b"<DmfA><Worker>")  # a fix gone wrong
    assert run_cli("requeue", go, "--config", str(config)).returncode == 0
    broken = {"ONSS_RELAY__WATCH__SETTLE": "1s", "ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "500ms"}
    assert run_cli("send", "--once", "--config", str(config), env=broken).returncode == 1
    shown = run_cli("status", go, "--config", str(config)).stdout
    assert "not well-formed XML" in shown and "environment not allowed" not in shown.split("history")[0], shown


def test_after_a_lost_journal_the_claim_refuses_a_sequence_found_in_sent(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    first = fi_name(7, app="DMFA")  # another code than the one below (fi_name's default became DIMN)
    (outbox / first).write_bytes(b"<DmfA>first</DmfA>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    [earlier] = (relay_dir / "spool" / "sent").rglob("GO" + first[2:-2])
    for f in (relay_dir / "spool").glob("journal.db*"):
        f.unlink()  # the journal is lost (a disk replaced, a restore without it)
    again = fi_name(7, app="DIMN")  # the same sequence under another application code: ACRF-133 all the same
    (outbox / again).write_bytes(b"<Dimona/>")
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 1 and "sent 0 set(s), quarantined 1" in r.stdout, r.stdout + r.stderr
    why = json.loads((relay_dir / "spool" / "failed" / f"{again}.reason.json").read_text())
    assert why["reason"] == "duplicate name, would be ACRF-133" and str(earlier) in why["detail"], why
    assert not (relay_dir / "remote" / "INTEST" / again).exists()


# -- review of issue 22 (22b), items 5 and 6 -------------------------------------------------------------------


def test_requeue_of_a_name_sent_meanwhile_is_refused_and_a_re_drop_is_compared_by_digest(relay_dir: Path) -> None:
    config, [part] = quarantined_set(relay_dir, parts=1)
    outbox, failed = relay_dir / "spool" / "outbox", relay_dir / "spool" / "failed"
    (outbox / part).write_bytes(b"<DmfA>corrected</DmfA>")  # a corrected declaration under the same name
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    assert state_of(config, "GO" + part[2:-2]) == State.SENT
    r = run_cli("requeue", part, "--config", str(config))
    assert r.returncode == 2 and "ACRF-133" in r.stderr and "new sequence number" in r.stderr, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert (failed / part).read_bytes() == b"<DmfA>first attempt</DmfA>" and not (outbox / part).exists()
    for content, said in ((b"<DmfA>corrected</DmfA>", "same bytes as sent"), (b"<DmfA>third</DmfA>", "different")):
        for f in failed.glob(f"{part}*"):
            f.unlink()
        (outbox / part).write_bytes(content)
        assert run_cli("send", "--once", "--config", str(config)).returncode == 1
        why = json.loads((failed / f"{part}.reason.json").read_text())
        assert why["reason"] == "duplicate name, would be ACRF-133" and said in why["detail"], why


def test_a_requeue_killed_between_two_parts_leaves_no_stale_reason_and_status_shows_no_hidden_file(
    relay_dir: Path,
) -> None:
    config, parts = quarantined_set(relay_dir)
    outbox, failed = relay_dir / "spool" / "outbox", relay_dir / "spool" / "failed"
    os.rename(failed / parts[0], outbox / parts[0])  # killed after the first part was linked in
    os.rename(failed / parts[1], outbox / f".{parts[1]}.requeue.tmp")  # and the second staged
    shown = run_cli("status", "--config", str(config), "--json").stdout
    assert not any(r.get("file") in parts for r in json.loads(shown).get("quarantined", [])), shown
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    assert list(failed.iterdir()) == []  # no <part>.reason.json left for a part that was sent


def test_after_a_lost_journal_the_exact_name_found_in_sent_is_refused(relay_dir: Path) -> None:
    """Issue 24 item 5: the exact name already in sent/, dropped again after the journal was lost, is
    quarantined, never sent again."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    name = fi_name(8)
    (outbox / name).write_bytes(b"<Dimona>first</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    [earlier] = (relay_dir / "spool" / "sent").rglob("GO" + name[2:-2])
    for f in (relay_dir / "spool").glob("journal.db*"):
        f.unlink()
    (relay_dir / "remote" / "INTEST" / name).unlink()  # the transfer point took it away
    (outbox / name).write_bytes(b"<Dimona>first</Dimona>")  # dropped again, unsure the first left
    r = run_cli("send", "--once", "--config", str(config))
    assert r.returncode == 1 and "quarantined 1" in r.stdout, r.stdout + r.stderr
    why = json.loads((relay_dir / "spool" / "failed" / f"{name}.reason.json").read_text())
    assert why["reason"] == "duplicate name, would be ACRF-133" and str(earlier) in why["detail"], why
    assert not (relay_dir / "remote" / "INTEST" / name).exists()
