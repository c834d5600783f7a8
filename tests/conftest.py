"""Shared fixtures: a local-transport relay configuration with a throw-away signing identity."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest

from onss_relay import identity
from onss_relay.config import Config, load_config
from onss_relay.names import Env, Name, Prefix, format_name
from onss_relay.transport.local import make_remote_home

SENDER = "123456"
SIGNING_PASSWORD = "Tr0ub4dor&3-signing"  # distinctive test secrets: no log of the whole run may contain them
SSH_PASSPHRASE = "correct horse battery"
SECRETS = (SIGNING_PASSWORD, SSH_PASSPHRASE, "PRIVATE KEY-----", "ftp-Pa55word-for-tests", "pg-Pa55word-for-tests")
TODAY = dt.date.today().strftime("%Y%m%d")


def fi_name(
    seq: int, env: str = "T", total: int = 1, part: int = 1, app: str = "DIMN", sender: str = SENDER, date: str = TODAY
) -> str:
    return format_name(Name(Prefix.FI, app, sender, date, f"{seq:05d}", Env(env), total, part))


def remote_config_text(remote: str) -> str:
    """Given the lines of a [remote] table, return a whole test config (spool, signing, fast watch and poll)."""
    return f"""
[sender]
number = "{SENDER}"
[paths]
root = "spool"
[signing]
key = "keys/signer.p12"
password_file = "keys/signer.pass"
[remote]
{remote}
[watch]
settle = "0s"
rescan = "1s"
settle_unknown = "1s"
duplicate_content_days = 0  # tests send the same bytes in many sets; tests/test_same_content.py turns it on
[poll]
interval = "1s"
"""


def write_config(directory: Path, extra: str = "", transport: str = "local") -> Path:
    """Given a folder, write a config with a local transport there (keys made beforehand); return its path."""
    path = directory / "config.toml"
    path.write_text(remote_config_text(f'transport = "{transport}"\nbase_dir = "remote"\nconnections = 2') + extra)
    return path


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("identity")
    identity.self_signed_identity(d, "Test Payroll", password=SIGNING_PASSWORD.encode())
    (d / "signer.pass").write_text(SIGNING_PASSWORD + "\n")
    return d


@pytest.fixture
def relay_dir(tmp_path: Path, identity_dir: Path) -> Path:
    (tmp_path / "keys").mkdir()
    for f in identity_dir.iterdir():
        (tmp_path / "keys" / f.name).write_bytes(f.read_bytes())
        (tmp_path / "keys" / f.name).chmod(0o600)  # secrets are their owner's alone (check refuses others)
    make_remote_home(tmp_path / "remote")
    write_config(tmp_path)
    return tmp_path


@pytest.fixture
def cfg(relay_dir: Path) -> Config:
    return load_config(relay_dir / "config.toml", environ={})


# -- real sshd ---------------------------------------------------------------------------------

from tests.fixtures.sshd import SshServer, keygen  # noqa: E402


@pytest.fixture(scope="session")
def client_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SSH client keys: rsa (the ONSS kind), ed25519, ecdsa, and an rsa key encrypted with a passphrase."""
    d = tmp_path_factory.mktemp("client-keys")
    (d / "passphrase").write_text(SSH_PASSPHRASE + "\n")
    return {
        "rsa": keygen(d / "id_rsa", "rsa", bits=2048),
        "ed25519": keygen(d / "id_ed25519"),
        "ecdsa": keygen(d / "id_ecdsa", "ecdsa"),
        "rsa-encrypted": keygen(d / "id_rsa_enc", "rsa", passphrase=SSH_PASSPHRASE, bits=2048),
        "passphrase": d / "passphrase",
    }


@pytest.fixture
def sshd(tmp_path: Path, client_keys: dict[str, Path]):  # type: ignore[no-untyped-def]
    server = SshServer(tmp_path / "sshd")
    server.setup()
    for kind in ("rsa", "ed25519", "ecdsa", "rsa-encrypted"):
        server.authorize(Path(str(client_keys[kind]) + ".pub"))
    server.start()
    yield server
    server.stop()


# quiet_period: tests that cut connections (nothing arrives later) need not wait the 2 minutes a real path
# may hold a packet; tests whose proxy holds packets (tests/faults/test_stalled_paths.py) set a longer one.
def sftp_config_text(server: SshServer, key: Path, known_hosts: Path, extra_remote: str = "") -> str:
    return remote_config_text(f"""transport = "sftp"
host = "127.0.0.1"
port = {server.port}
username = "{server.user}"
private_key = "{key}"
known_hosts = "{known_hosts}"
base_dir = "."
connections = 4
timeout = "10s"
quiet_period = "1s"
{extra_remote}""")


@pytest.fixture
def sftp_dir(relay_dir: Path, sshd: SshServer, client_keys: dict[str, Path]) -> Path:
    """A relay folder whose config.toml talks SFTP to the test sshd with the RSA key, legacy ssh-rsa on."""
    known = relay_dir / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    (relay_dir / "config.toml").write_text(sftp_config_text(sshd, client_keys["rsa"], known))
    return relay_dir


@pytest.fixture
def sftp_cfg(sftp_dir: Path) -> Config:
    return load_config(sftp_dir / "config.toml", environ={})


# -- no secret in any log of the whole run ------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def log_everything_to_a_file(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """In-process logs go, at debug level, to a file that the end-of-run secret check reads too."""
    from onss_relay.log import setup_logging

    path = tmp_path_factory.getbasetemp() / "in-process.log"
    # what the CLI runs of tests/helpers.run_cli print on stderr, for the end-of-run checks
    os.environ["ONSS_RELAY_TEST_STDERR_LOG"] = str(tmp_path_factory.getbasetemp() / "cli-stderr.log")
    with path.open("a", errors="backslashreplace") as f:  # as sys.stderr, where the CLI logs: a name no UTF-8 is shown
        setup_logging("debug", json_output=True, stream=f)
        yield
    setup_logging("info")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Given the collected tests, run the slow ones first (the fault worlds under tests/faults/ come first of
    all), the rest keeping their order: with the README's xdist workers, no long test starts last and keeps the
    run going alone while the other workers idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


GROUPED = "tests/test_container.py::"  # xdist_group("containers"): one worker builds the image once for all


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Given a worker's collected test ids, stop the run if the container tests were not grouped (pytest-xdist's
    loadgroup names the group in the id; with a pytest it does not support, each worker builds the image)."""
    lost = [i for i in ids if i.startswith(GROUPED) and "@" not in i]
    if lost:
        raise pytest.UsageError(
            f"pytest {pytest.__version__} with this pytest-xdist did not group {lost[0]} and {len(lost) - 1} more:"
            " install the versions pyproject.toml's test extra pins"
        )


TRACEBACK = "Traceback (most recent call last)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Grep every log file the run wrote (daemons, CLI runs' stderr, in-process) for the test secrets, and for
    tracebacks: whatever goes wrong, a person gets one sentence (a traceback only with --debug)."""
    base = getattr(session.config, "_tmp_path_factory", None)
    if base is None or hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller reads every worker's logs (they are under its base folder)
    root = base.getbasetemp()
    leaks, tracebacks = [], []
    for log in root.rglob("*.log"):
        if not log.is_file():
            continue
        text = log.read_text(errors="replace")
        leaks += [f"{log}: contains {secret!r}" for secret in SECRETS if secret in text]
        if TRACEBACK in text:
            at = text.index(TRACEBACK)
            tracebacks.append(f"{log}:\n{text[max(0, at - 300) : at + 1500]}")
    if leaks:
        print("\nSECRETS FOUND IN LOGS:\n" + "\n".join(leaks))
        session.exitstatus = 1
    if tracebacks:
        print(
            f"\nTRACEBACKS IN {len(tracebacks)} LOG(S) (a person must get one sentence):\n"
            + "\n\n".join(tracebacks[:5])
        )
        session.exitstatus = 1


# -- real FTP / FTPS servers ---------------------------------------------------------------------

from tests.fixtures.ftpd import FTP_PASSWORD, FTP_USER, FtpServer  # noqa: E402


def ftp_config_text(server: FtpServer, password_file: Path, extra_remote: str = "") -> str:
    ca = f'ca_file = "{server.cert}"\n' if server.tls else ""
    return remote_config_text(f"""transport = "{"ftps" if server.tls else "ftp"}"
host = "127.0.0.1"
port = {server.port}
username = "{FTP_USER}"
password_file = "{password_file}"
{ca}base_dir = "."
connections = 2
timeout = "10s"
quiet_period = "1s"
{extra_remote}""")


def _ftp_dir(relay_dir: Path, tmp_path: Path, tls: bool):  # type: ignore[no-untyped-def]
    server = FtpServer(tmp_path / ("ftpsd" if tls else "ftpd"), tls=tls)
    server.start()
    password = relay_dir / "keys" / "ftp.pass"
    password.write_text(FTP_PASSWORD + "\n")
    password.chmod(0o600)
    (relay_dir / "config.toml").write_text(ftp_config_text(server, password))
    return server


@pytest.fixture
def ftpd(relay_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    server = _ftp_dir(relay_dir, tmp_path, tls=False)
    yield server
    server.stop()


@pytest.fixture
def ftpsd(relay_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    server = _ftp_dir(relay_dir, tmp_path, tls=True)
    yield server
    server.stop()


from tests.fixtures.postgres import PgServer, pg_bin  # noqa: E402


@pytest.fixture(scope="session")
def pg_server():  # type: ignore[no-untyped-def]
    """One PostgreSQL server for the session (a fresh database per test: pg_server.new_database())."""
    if pg_bin() is None and not os.environ.get("CI"):
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql); CI installs it")
    server = PgServer()
    yield server
    server.close()
