"""The same declaration twice (issue 24 item 4): the same bytes dropped again under the next sequence number
are quarantined naming the earlier set, by default; `requeue --force` sends them anyway; 0 turns it off."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import fi_name
from tests.helpers import run_cli

ON = {"ONSS_RELAY__WATCH__DUPLICATE_CONTENT_DAYS": "3"}  # the shipped default (the test config turns it off)


def go(name: str) -> str:
    return "GO" + name[2:-2]


def test_the_same_content_twice_is_quarantined_naming_the_first_and_requeue_force_sends_it(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox, remote = relay_dir / "spool" / "outbox", relay_dir / "remote" / "INTEST"
    outbox.mkdir(parents=True, exist_ok=True)
    body = b"<Dimona><Worker>85010112345</Worker></Dimona>"
    (outbox / fi_name(1)).write_bytes(body)
    assert run_cli("send", "--once", "--config", str(config), env=ON).returncode == 0
    (outbox / fi_name(2)).write_bytes(body)  # submitted again, unsure the first left
    r = run_cli("send", "--once", "--config", str(config), env=ON)
    assert r.returncode == 1 and "sent 0 set(s), quarantined 1" in r.stdout, r.stdout + r.stderr
    why = json.loads((relay_dir / "spool" / "failed" / f"{fi_name(2)}.reason.json").read_text())
    assert why["reason"] == "same content as an earlier set" and go(fi_name(1)) in why["detail"], why
    assert "requeue --force" in why["detail"]
    assert not (remote / fi_name(2)).exists()
    r = run_cli("requeue", fi_name(2), "--config", str(config))  # without --force: quarantined again
    assert r.returncode == 0, r.stderr
    assert run_cli("send", "--once", "--config", str(config), env=ON).returncode == 1
    assert not (remote / fi_name(2)).exists()
    r = run_cli("requeue", "--force", fi_name(2), "--config", str(config))
    assert r.returncode == 0, r.stderr
    r = run_cli("send", "--once", "--config", str(config), env=ON)
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    assert (remote / fi_name(2)).read_bytes() == body
    # its quarantine result went with its quarantine (it once stayed, saying quarantined, pointing at nothing)
    assert not (relay_dir / "spool" / "results" / f"{fi_name(2)}.quarantined.json").exists()


def test_two_copies_in_one_scan_send_one_and_zero_days_turns_it_off(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    outbox, remote = relay_dir / "spool" / "outbox", relay_dir / "remote" / "INTEST"
    outbox.mkdir(parents=True, exist_ok=True)
    for seq in (1, 2):
        (outbox / fi_name(seq)).write_bytes(b"<Dimona>twice</Dimona>")
    r = run_cli("send", "--once", "--config", str(config), env=ON)
    assert r.returncode == 1 and "sent 1 set(s), quarantined 1" in r.stdout, r.stdout + r.stderr
    (outbox / fi_name(3)).write_bytes(b"<Dimona>twice</Dimona>")
    off = {"ONSS_RELAY__WATCH__DUPLICATE_CONTENT_DAYS": "0"}
    r = run_cli("send", "--once", "--config", str(config), env=off)
    assert r.returncode == 0 and (remote / fi_name(3)).exists(), r.stdout + r.stderr


def test_the_same_file_tested_in_t_and_then_sent_in_r_is_not_a_duplicate(relay_dir: Path) -> None:
    """Testing a declaration in T (or S) and then sending the same bytes in R is the ONSS's own workflow: the
    review found the R set quarantined as 'same content as an earlier set'."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    body = b"<Dimona><Worker>85010112345</Worker></Dimona>"
    (outbox / fi_name(1, env="T")).write_bytes(body)
    assert run_cli("send", "--once", "--config", str(config), env=ON).returncode == 0
    env = ON | {"ONSS_RELAY__WATCH__ENVIRONMENTS": '["R", "T", "S"]'}
    (outbox / fi_name(1, env="R")).write_bytes(body)
    r = run_cli("send", "--once", "--config", str(config), env=env)
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    assert (relay_dir / "remote" / "IN" / fi_name(1, env="R")).read_bytes() == body


def test_the_times_in_a_duplicates_reason_are_local_with_their_zone(relay_dir: Path) -> None:
    """The same content, and the same name dropped again: their reasons once gave times without a zone."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    env = ON | {"TZ": "Europe/Brussels"}  # November: CET
    (outbox / fi_name(1)).write_bytes(b"<Dimona>zone</Dimona>")
    assert run_cli("send", "--once", "--config", str(config), env=env).returncode == 0
    (outbox / fi_name(2)).write_bytes(b"<Dimona>zone</Dimona>")  # the same content
    (outbox / fi_name(1)).write_bytes(b"<Dimona>zone, the same name</Dimona>")  # the same name, dropped again
    assert run_cli("send", "--once", "--config", str(config), env=env).returncode == 1
    failed = relay_dir / "spool" / "failed"
    for name in (fi_name(2), fi_name(1)):
        detail = json.loads((failed / f"{name}.reason.json").read_text())["detail"]
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", detail), (name, detail)
