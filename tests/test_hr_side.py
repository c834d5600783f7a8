"""Docker beside an HR system (issue 24 item 9): a quarantined file and its reason reach the results folder the
HR side reads; a secret the relay's user cannot read stops `run` in one sentence instead of running unhealthy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import fi_name
from tests.helpers import WITHOUT_ROOT_FILE_ACCESS, run_cli


def test_a_quarantined_file_gets_a_result_in_the_results_folder(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    exchange = relay_dir / "exchange" / "results"  # paths.results on the HR side's volume
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / "payroll-export.xml").write_bytes(b"<DmfA/>")  # not a declaration name: quarantined
    (outbox / fi_name(2, sender="654321")).write_bytes(b"<DmfA/>")  # not our sender number
    env = {"ONSS_RELAY__PATHS__RESULTS": str(exchange)}
    assert run_cli("send", "--once", "--config", str(config), env=env).returncode == 1
    result = json.loads((exchange / "payroll-export.xml.quarantined.json").read_text())
    assert result["state"] == "quarantined" and result["reason"] == "not a valid declaration file name", result
    assert Path(result["failed_path"]).exists()
    wrong = json.loads((exchange / f"{fi_name(2, sender='654321')}.quarantined.json").read_text())
    assert "sender" in wrong["reason"] and wrong["state"] == "quarantined", wrong


def test_a_secret_the_relays_user_cannot_read_stops_run_in_one_sentence(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    password = relay_dir / "keys" / "signer.pass"
    os.chown(password, 65534, 65534)  # a secret mounted for another uid, mode 600
    proc = subprocess.Popen(
        [*WITHOUT_ROOT_FILE_ACCESS, sys.executable, "-m", "onss_relay.cli", "run", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("run kept running with a secret it cannot read") from None
    assert proc.returncode == 2, err
    [line] = err.strip().splitlines()
    assert f"signing.password_file = '{password}': this user (uid 0) cannot read it" in json.loads(line)["error"]


REPO = Path(__file__).resolve().parents[1]


def test_the_compose_example_names_an_image_and_builds_nothing() -> None:
    """Copied out of the source tree, `build: .` has nothing to build: the example names the image."""
    services = (REPO / "docker-compose.example.yml").read_text().split("\nvolumes:")[0]
    relay = services.split("  onss-relay:\n", 1)[1].split("\n  hr-system:", 1)[0]
    assert relay.startswith("    image: onss-relay")
    assert not [ln for ln in services.splitlines() if ln.strip().startswith("build:")]


def test_uninstall_removes_every_file_the_install_blocks_put_in_system_folders() -> None:
    readme = (REPO / "README.md").read_text()
    installs = readme.split("### As a systemd service", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    made = [
        line.split()[-1]
        for line in installs.replace("\\\n", " ").replace("&&", "\n").splitlines()
        if line.strip().startswith(("install ", "ln "))
    ]
    uninstall = readme.split("- **Uninstall.**", 1)[1].split("\n- ", 1)[0]
    for dest in made:
        dest = dest.rstrip("/") + ("/onss-relay.service" if dest.endswith("system/") else "")
        assert f"`{dest}`" in uninstall or dest in uninstall, dest


def test_a_quarantined_file_never_overwrites_a_sets_result(relay_dir: Path) -> None:
    """A sent set's FI and GO dropped again: the GO file's own quarantine result once replaced the set's
    results/<GO>.json (notified, accepted) with 'quarantined'."""
    config = relay_dir / "config.toml"
    results = relay_dir / "spool" / "results"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    name = fi_name(1)
    go = "GO" + name[2:-2]
    (outbox / name).write_bytes(b"<Dimona>one</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    (outbox / name).write_bytes(b"<Dimona>one</Dimona>")
    (outbox / go).write_bytes(b"")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 1
    assert json.loads((results / f"{go}.json").read_text())["state"] == "sent"  # the set's own result kept
    assert json.loads((results / f"{go}.quarantined.json").read_text())["state"] == "quarantined"


def test_the_postgresql_compose_variant_runs_two_relays_on_one_spool_and_one_database() -> None:
    """High availability's example: two relay services of one image on one spool volume, the journal in the
    PostgreSQL service, its password from a secret file and never in the URL; it builds nothing."""
    text = (REPO / "docker-compose.postgres.example.yml").read_text()
    relay = text.split("x-relay: &relay\n", 1)[1].split("\nservices:", 1)[0]
    assert relay.startswith("  image: onss-relay") and not [
        ln for ln in text.splitlines() if "build:" in ln.split("#")[0]
    ]
    assert "relay-a:\n    <<: *relay" in text and "relay-b:\n    <<: *relay" in text
    assert "- relay-spool:/var/lib/onss-relay" in relay and "image: postgres:" in text
    url = relay.split("ONSS_RELAY__JOURNAL__URL:", 1)[1].split("\n", 1)[0]
    assert "postgresql://onss_relay@journal-db:5432/" in url and ":" not in url.split("//", 1)[1].split("@")[0]
    assert "ONSS_RELAY__JOURNAL__PASSWORD_FILE: /run/secrets/journal_password" in relay
    # review of issue 25: PostgreSQL (uid 999) and the relays (uid 10001) each read their own copy, mode 600
    database = text.split("  journal-db:\n", 1)[1].split("\nvolumes:", 1)[0]
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/journal_db_password" in database
    assert "- journal_db_password" in database and "- journal_password\n" not in database
    assert (
        "chown 999:999 ./secrets/journal_db_password.txt" in text and "chown 10001:10001 ./secrets/journal_pass" in text
    )
