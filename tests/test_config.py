"""Configuration: the documented example loads, overrides apply, and every mistake is one clear sentence."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import structlog
import structlog.testing

from onss_relay.config import documented_keys, load_config, parse_duration
from onss_relay.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "example.toml"
MINIMAL = """
[sender]
number = "123456"
[paths]
root = "spool"
[signing]
key = "signer.p12"
[remote]
transport = "local"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_example_documents_every_key_and_loads() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    assert {s: set(t) for s, t in raw.items()} == {s: set(k) for s, k in documented_keys().items()}
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.remote.port == 8022 and cfg.watch.settle == 2 and cfg.poll.interval == 300
    text = EXAMPLE.read_text()
    for section, keys in documented_keys().items():
        for key in keys:
            # each key is preceded by a comment line explaining it
            assert re.search(rf"#[^\n]*\n{key} = ", text), f"{section}.{key} has no comment in example.toml"


def test_demo_config_loads() -> None:
    cfg = load_config(REPO / "config" / "demo.toml", environ={})
    assert cfg.remote.transport == "local" and cfg.watch.settle == 0


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), environ={})
    assert cfg.paths.root == tmp_path / "spool"
    assert cfg.signing.key == tmp_path / "signer.p12"
    assert cfg.paths.outbox_dir == tmp_path / "spool" / "outbox"


@pytest.mark.parametrize(
    "text, message",
    [
        (MINIMAL + "colour = 1\n", "unknown key remote.colour"),
        (MINIMAL + "[extra]\n", "unknown section [extra]"),
        (MINIMAL.replace('number = "123456"', "number = 123456"), "sender.number = 123456: expected a string"),
        (MINIMAL.replace('number = "123456"', 'number = "12345"'), "sender.number: '12345' is not 6 digits"),
        (MINIMAL.replace('key = "signer.p12"\n', ""), "missing required key signing.key"),
        (MINIMAL + 'connections = "four"\n', "remote.connections = 'four': expected a whole number"),
        (MINIMAL + '[watch]\nsettle = "soon"\n', "watch.settle = 'soon': 'soon' is not a duration"),
        (MINIMAL + 'timeout = "0s"\n', "remote.timeout: must be more than 0s"),  # was every connect "unreachable"
        (MINIMAL + '[watch]\nenvironments = ["X"]\n', "watch.environments: 'X' is not R, T or S"),
        (MINIMAL.replace('"local"', '"sftp"'), 'remote.username: is required when remote.transport = "sftp"'),
        ("[sender\n", "not valid TOML"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "ONSS_RELAY__REMOTE__CONNECTIONS": "7",
        "ONSS_RELAY__WATCH__SETTLE": "5m",
        "ONSS_RELAY__POLL__ENVIRONMENTS": '["T"]',
        "ONSS_RELAY__REMOTE__HOST": "sftp.example",
        "ONSS_RELAY__POLL__DELETE_REMOTE": "false",
        "UNRELATED": "x",
    }
    cfg = load_config(write(tmp_path, MINIMAL), environ=env)
    assert cfg.remote.connections == 7 and cfg.watch.settle == 300 and cfg.poll.environments == ["T"]
    assert cfg.remote.host == "sftp.example" and cfg.poll.delete_remote is False


def test_bad_override_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key remote.hots"):
        load_config(write(tmp_path, MINIMAL), environ={"ONSS_RELAY__REMOTE__HOTS": "x"})
    with pytest.raises(ConfigError, match="ONSS_RELAY__SECTION__KEY"):
        load_config(write(tmp_path, MINIMAL), environ={"ONSS_RELAY__REMOTE": "x"})


@pytest.mark.parametrize("text, seconds", [("2s", 2), ("5m", 300), ("1h", 3600), ("250ms", 0.25), (3, 3), ("0", 0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_cli_exits_2_with_one_sentence(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "colour = 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "onss_relay.cli", "status", "--config", str(path)], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "remote.colour" in r.stderr and "Traceback" not in r.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "onss_relay.cli", "status", "--config", str(tmp_path / "no.toml")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "configuration file not found" in missing.stderr


def test_a_string_setting_given_digits_in_the_environment_stays_a_string(tmp_path: Path) -> None:
    # compose files and `docker run -e` give ONSS_RELAY__SENDER__NUMBER=123456, unquoted
    example = Path(__file__).resolve().parents[1] / "config" / "example.toml"
    env = {
        "ONSS_RELAY__SENDER__NUMBER": "000123",
        "ONSS_RELAY__REMOTE__USERNAME": "12345678",
        "ONSS_RELAY__REMOTE__PORT": "2222",
    }
    cfg = load_config(example, environ=env)
    assert (cfg.sender.number, cfg.remote.username, cfg.remote.port) == ("000123", "12345678", 2222)


def test_environment_s_is_signed_by_default_and_the_old_key_still_reads_with_a_warning(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL), environ={}).signing.sign_in_s is True
    old = MINIMAL.replace('key = "signer.p12"', 'key = "signer.p12"\nsign_simulation = false')
    with structlog.testing.capture_logs() as logs:
        cfg = load_config(write(tmp_path, old), environ={})
    assert cfg.signing.sign_in_s is False
    [warning] = [e for e in logs if e["event"] == "config_key_deprecated"]
    assert warning["log_level"] == "warning" and "write signing.sign_in_s instead" in warning["detail"]
    both = old.replace("sign_simulation = false", "sign_simulation = false\nsign_in_s = true")
    with pytest.raises(ConfigError, match="keep only signing.sign_in_s"):
        load_config(write(tmp_path, both), environ={})


@pytest.mark.parametrize(
    "url, says",
    [
        ("host=127.0.0.1 port=5432 dbname=ha user=relay password=S3cret-pw", "a connection string is not known"),
        ("mysql://relay:S3cret-pw@db/ha", "the scheme 'mysql' is not known"),
        ("postgresql://relay:S3cret-pw@db:5432/ha", "holds a password"),
        ("postgresql://relay@db:5432/ha?password=S3cret-pw", "holds a password"),
        ("postgresql://relay@db:5432/ha?sslmode=require&pass%77ord=S3cret-pw", "holds a password"),  # libpq decodes
    ],
)
def test_a_journal_url_problem_never_quotes_the_password(tmp_path: Path, url: str, says: str) -> None:
    """Review of issue 25: a keyword connection string was refused with its whole value quoted, password and all."""
    from onss_relay.config_rules import journal_url_problem

    problem = journal_url_problem(url)
    assert problem is not None and says in problem and "S3cret" not in problem, problem
