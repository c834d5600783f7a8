"""Review of issue 25: the PostgreSQL journal's settings at fault stop `run` in one sentence with exit 2 (no
psycopg, an unreadable journal.password_file, a refused password) instead of a crash loop or a standby that
waits for ever; `check` flags journal.password_file readable by others as it does the other secrets."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from onss_relay.config import load_config
from onss_relay.errors import ConfigError
from tests.fixtures.postgres import RELAY_PASSWORD
from tests.helpers import run_cli

NO_PSYCOPG = """
import sys


class NoPsycopg:
    def find_spec(self, name, path=None, target=None):
        if name == "psycopg" or name.startswith("psycopg."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoPsycopg())
"""


@pytest.fixture
def relay_url(pg_server: Any) -> str:
    """A fresh database, reached as the role "relay", which must give its password."""
    return str(pg_server.new_database()).replace("postgres@", "relay@", 1)


def _with_journal(relay_dir: Path, url: str, password_file: Path | None) -> Path:
    config = relay_dir / "config.toml"
    secret = f'password_file = "{password_file}"\n' if password_file else ""
    config.write_text(f'{config.read_text()}\n[journal]\nurl = "{url}"\nlease = "3s"\n{secret}')
    return config


def test_run_without_psycopg_says_how_to_install_it(relay_dir: Path, tmp_path: Path) -> None:
    config = _with_journal(relay_dir, "postgresql://relay@127.0.0.1:1/onss", None)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_PSYCOPG)
    path = os.pathsep.join(p for p in (str(blocker), os.environ.get("PYTHONPATH", "")) if p)
    r = run_cli("run", "--config", str(config), env={"PYTHONPATH": path}, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "pip install 'onss-relay[postgres]'" in r.stderr and "unexpected" not in r.stderr, r.stderr


def test_run_stops_on_an_unreadable_journal_password_file(relay_dir: Path, relay_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "secret-is-a-folder"
    folder.mkdir()
    r = run_cli("run", "--config", str(_with_journal(relay_dir, relay_url, folder)), timeout=60)
    assert r.returncode == 2 and "journal.password_file" in r.stderr, r.stderr


def test_run_stops_on_a_refused_password(relay_dir: Path, relay_url: str, tmp_path: Path) -> None:
    wrong = tmp_path / "journal_password.txt"
    wrong.write_text("not-" + RELAY_PASSWORD + "\n")
    wrong.chmod(0o600)
    r = run_cli("run", "--config", str(_with_journal(relay_dir, relay_url, wrong)), timeout=60)
    assert r.returncode == 2 and "journal.password_file" in r.stderr and "refused" in r.stderr, r.stderr
    assert RELAY_PASSWORD not in r.stderr


def test_a_short_lease_is_refused_saying_it_is_renewed_every_quarter(relay_dir: Path) -> None:
    """The code renews the lease every quarter of it (README too): the refusal said "every third"."""
    config = _with_journal(relay_dir, "postgresql://relay@127.0.0.1:1/onss", None)
    config.write_text(config.read_text().replace('lease = "3s"', 'lease = "2s"'))
    with pytest.raises(ConfigError, match="journal.lease.*every quarter of it"):
        load_config(config, environ={})


def test_check_flags_a_journal_password_file_readable_by_others(
    relay_dir: Path, relay_url: str, tmp_path: Path
) -> None:
    secret = tmp_path / "journal_password.txt"
    secret.write_text(RELAY_PASSWORD + "\n")
    secret.chmod(0o644)
    r = run_cli("check", "--config", str(_with_journal(relay_dir, relay_url, secret)), timeout=60)
    assert "journal.password_file" in r.stdout and "readable by others" in r.stdout, r.stdout + r.stderr


def test_a_database_holding_another_senders_journal_is_refused(relay_dir: Path, pg_server: Any) -> None:
    """Audit of issue 25: the leadership row is per sender, so two senders' relays given one database both led,
    and each read (and would recover and upload) the other's sets: `status` of sender 654321 listed 123456's."""
    config = _with_journal(relay_dir, pg_server.new_database(), None)
    content = relay_dir / "declaration.xml"
    content.write_text("<Dimona/>")
    submitted = run_cli("submit", "--config", str(config), str(content), "--app", "DIMN", "--env", "T", timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    other = relay_dir / "other.toml"
    other.write_text(config.read_text().replace('number = "123456"', 'number = "654321"'))
    for command in (["run"], ["status"], ["check", "--local"]):
        r = run_cli(*command, "--config", str(other), timeout=60)
        assert r.returncode != 0 and "holds the journal of sender number 123456, not 654321" in r.stderr + r.stdout, (
            command,
            r.stdout,
            r.stderr,
        )
    assert run_cli("status", "--config", str(config), timeout=60).returncode == 0  # its own sender still opens it


def test_send_and_poll_once_say_the_database_cannot_be_reached_not_that_a_relay_runs(relay_dir: Path) -> None:
    """Audit of issue 25: with the journal's database down they said "refused: a relay (unknown (…)) is running on
    this spool … stop it first" (exit 1), sending the sysadmin after a relay that does not exist."""
    config = _with_journal(relay_dir, "postgresql://relay@127.0.0.1:1/onss", None)
    for command in ("send", "poll"):
        r = run_cli(command, "--once", "--config", str(config), timeout=60)
        assert r.returncode == 4, r.stderr
        assert "cannot reach the journal database" in r.stderr and "is running on this spool" not in r.stderr, r.stderr


@pytest.mark.parametrize(
    "query, says",
    [
        ("sslmode=bogus", "invalid sslmode value"),
        ("sslmode=require&ssl_mode=x", "invalid URI query parameter"),
        ("sslmode=verify-full&sslrootcert=/nonexistent/db-ca.pem", "sslrootcert /nonexistent/db-ca.pem: No such file"),
    ],
)
def test_run_stops_on_a_journal_url_option_libpq_refuses(relay_dir: Path, query: str, says: str) -> None:
    """Audit of issue 25: a mistyped TLS option or a CA file not there made `run` wait as a standby for ever
    ("waiting for the journal's database … invalid sslmode value"), or silently (an unknown option)."""
    config = _with_journal(relay_dir, f"postgresql://relay@127.0.0.1:1/onss?{query}", None)
    r = run_cli("run", "--config", str(config), timeout=60)
    assert r.returncode == 2 and "journal.url" in r.stderr and says in r.stderr, r.stderr
