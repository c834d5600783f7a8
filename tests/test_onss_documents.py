"""What the ONSS's own documents say (shared/seeds): environments per application, ASCII declarations, DRS
names, the technical user, FTP. Each is reported or refused as the documents ask, through the real relay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.results import overdue
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name


@pytest.fixture
def relay(cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(cfg)
    yield r
    r.close()


def go_of(fi: str) -> str:
    return "GO" + fi[2:].rsplit(".", 1)[0]


def result_of(relay: Relay, fi: str) -> dict:  # type: ignore[type-arg]
    return json.loads((relay.spool.results / f"{go_of(fi)}.json").read_text())  # type: ignore[no-any-return]


def test_an_environment_the_documents_do_not_list_is_a_warning_in_the_result(relay: Relay, relay_dir: Path) -> None:
    dimona_in_s = fi_name(1, env="S")  # Dimona: R and T only
    dmfa_in_t = fi_name(1, app="DMFA")  # DmfA in T: a circuit test
    dimona_in_t = fi_name(2)
    for name in (dimona_in_s, dmfa_in_t, dimona_in_t):
        (relay.spool.outbox / name).write_bytes(b"<Dimona/>\r\n")
    relay.send_once(wait_for_settle=False)
    Simulator(relay_dir / "remote", SENDER).process()
    relay.poll_once()
    [warning] = result_of(relay, dimona_in_s)["warnings"]
    assert "DIMN is sent to environment S (declaration test)" in warning and "do not list" in warning
    assert "R (production), T (test)" in warning
    assert result_of(relay, dimona_in_s)["state"] == "notified"  # reported, never refused
    [circuit] = result_of(relay, dmfa_in_t)["warnings"]
    assert "only a circuit test" in circuit and result_of(relay, dmfa_in_t)["state"] == "acknowledged"
    assert result_of(relay, dimona_in_t)["warnings"] == []
    row = relay.journal.get_set(go_of(dmfa_in_t))
    assert row is not None and row.state == State.ACKNOWLEDGED
    long_ago = dataclasses.replace(row, updated_at=0.0)
    assert overdue(long_ago, cfg_poll(relay), 10**9) is None  # no notification follows a circuit test
    other = relay.journal.get_set(go_of(dimona_in_t))
    assert other is not None
    waiting = dataclasses.replace(other, state=State.ACKNOWLEDGED, updated_at=0.0)
    assert overdue(waiting, cfg_poll(relay), 10**9) is not None


def cfg_poll(relay: Relay):  # type: ignore[no-untyped-def]
    return relay.cfg.poll


def test_bytes_that_do_not_match_the_declared_encoding_are_reported_never_refused(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True)
    files = {
        fi_name(1): b'<?xml version="1.0" encoding="UTF-8"?>\r\n<Dimona>caf\xe9</Dimona>\r\n',  # Latin-1 byte
        fi_name(2): b'<?xml version="1.0" encoding="US-ASCII"?>\r\n<Dimona>caf\xc3\xa9</Dimona>\r\n',
        fi_name(3): b"<Dimona>caf\xc3\xa9</Dimona>\r\n",  # no prolog: ASCII expected
        fi_name(4): b'<?xml version="1.0" encoding="UTF-8"?>\r\n<Dimona>caf\xc3\xa9</Dimona>\r\n',  # as declared
        fi_name(5): b"<Dimona>plain ASCII</Dimona>\r\n",
    }
    for name, content in files.items():
        (outbox / name).write_bytes(content)
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"))
    assert r.returncode == 0 and "sent 5 set(s)" in r.stdout, r.stdout + r.stderr
    assert r.stderr.count("declaration_warning") == 3
    results = relay_dir / "spool" / "results"
    warnings = {n: json.loads((results / f"{go_of(n)}.json").read_text())["warnings"] for n in files}
    at = {n: c.index(b"caf") + 3 for n, c in files.items() if b"caf" in c}  # the first byte after "caf"
    assert warnings[fi_name(1)] == [
        f"{fi_name(1)}: byte {at[fi_name(1)]} is not valid UTF-8, but its XML prolog declares UTF-8"
    ]
    assert warnings[fi_name(2)] == [
        f"{fi_name(2)}: byte {at[fi_name(2)]} is not valid US-ASCII, but its XML prolog declares US-ASCII"
    ]
    [no_prolog] = warnings[fi_name(3)]
    assert f"byte {at[fi_name(3)]} is not ASCII and no XML prolog declares an encoding" in no_prolog
    assert warnings[fi_name(4)] == [] and warnings[fi_name(5)] == []
    for name, content in files.items():  # sent as they were, byte for byte
        assert (relay_dir / "remote" / "INTEST" / name).read_bytes() == content


@pytest.mark.parametrize("app", ["WECH", "AOAT", "ZIMA"])
def test_submit_writes_drs_names_without_part_fields(relay_dir: Path, app: str) -> None:
    from onss_relay.names import application_codes
    from tests.helpers import run_cli

    config = str(relay_dir / "config.toml")
    content = relay_dir / "drs.txt"
    content.write_bytes(b"DRS flat record\r\n")
    r = run_cli("submit", str(content), "--app", app.lower(), "--env", "T", "--config", config)
    assert r.returncode == 0, r.stderr
    [name] = r.stdout.split()
    assert name.startswith(f"FI.{app}.{SENDER}.") and name.endswith(".00001.T")  # FI.WECH.123456.20030801.00001.R
    assert (relay_dir / "spool" / "outbox" / name).read_bytes() == content.read_bytes()
    parts = run_cli("submit", str(content), str(content), "--parts", "--app", app, "--env", "T", "--config", config)
    assert parts.returncode == 2 and f"{app} names have no part fields" in parts.stderr
    sent = run_cli("send", "--once", "--config", config)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert (relay_dir / "remote" / "INTEST" / f"GO{name[2:]}").exists()  # the GO of a plain name: same fields
    assert (relay_dir / "remote" / "INTEST" / f"FS{name[2:]}").exists()
    dimona = run_cli("submit", str(content), "--app", "DIMN", "--env", "T", "--config", config)
    assert dimona.stdout.split()[0].endswith(".00002.T.1.1")  # Dimona keeps FI.DIMN.….R.1.1
    assert application_codes()[app].meaning.startswith("DRS ")


def test_ftp_without_its_own_host_is_a_configuration_error_and_check_says_ftp_may_go(
    relay_dir: Path,
    ftpd,  # type: ignore[no-untyped-def]
) -> None:
    from tests.conftest import remote_config_text
    from tests.helpers import run_cli

    r = run_cli("check", "--config", str(relay_dir / "config.toml"))  # the ftpd fixture's own host and port
    assert r.returncode == 0, r.stdout + r.stderr
    assert "! remote.transport = 'ftp': the ONSS keeps FTP" in r.stdout and "may withdraw it" in r.stdout
    config = relay_dir / "ftp.toml"
    remote = f'transport = "ftp"\nusername = "techuser01"\npassword_file = "{relay_dir / "keys" / "ftp.pass"}"\n'
    config.write_text(remote_config_text(remote))
    r = run_cli("check", "--config", str(config))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert "ftp.toml: remote.host: is required when remote.transport = 'ftp'" in r.stderr
    assert "sftp.socialsecurity.be:8022 is the SFTP channel's" in r.stderr and "may withdraw it" in r.stderr
    config.write_text(remote_config_text(remote + 'host = "sftp.socialsecurity.be"\n'))
    assert run_cli("check", "--config", str(config)).returncode == 2  # the SFTP host is no FTP host
    config.write_text(remote_config_text(remote + 'host = "ftp.example"\n'))
    assert load_config(config, environ={}).remote.port == 21  # never the SFTP port 8022


@pytest.mark.parametrize("username", ["techuser", "Techuser01", "tech_user01", "tech user01", "t" * 21, "root"])
def test_a_technical_user_outside_the_portal_rule_is_a_configuration_error(tmp_path: Path, username: str) -> None:
    from tests.helpers import run_cli

    example = Path(__file__).resolve().parents[1] / "config" / "example.toml"  # remote.host sftp.socialsecurity.be
    env = {"ONSS_RELAY__REMOTE__USERNAME": username}
    r = run_cli("check", "--local", "--config", str(example), env=env)
    if username == "techuser":  # 8 characters: the shortest allowed
        assert "remote.username" not in r.stderr
        return
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    said = f"environment variable ONSS_RELAY__REMOTE__USERNAME: remote.username: {username!r} is not a technical"
    assert said in r.stderr  # the variable gave it: example.toml says techuser01
    assert "8 to 20 characters, a-z and 0-9 only" in r.stderr


def test_the_technical_user_rule_is_the_onss_s_and_not_a_test_server_s(tmp_path: Path) -> None:
    from onss_relay.config_rules import technical_user_problem

    assert technical_user_problem("root", "127.0.0.1") is None  # the sshd fixture, a gateway, a test server
    assert technical_user_problem("root", "sftp.socialsecurity.be") is not None
    assert technical_user_problem("root", "ftp.socialsecurity.be") is not None
    assert technical_user_problem("a1b2c3d4e5f6g7h8i9j0", "sftp.socialsecurity.be") is None  # 20 characters


def test_demo_with_a_relative_folder(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    r = run_cli("demo", "relative/demo", cwd=tmp_path)
    assert r.returncode == 0 and "demo succeeded" in r.stdout, r.stdout + r.stderr
    assert f"onss-relay demo in {tmp_path / 'relative' / 'demo'}" in r.stdout and "spool/sent/" in r.stdout
    assert (tmp_path / "relative" / "demo" / "config.toml").is_file()


# -- what a hostile review of issue 28 reproduced ------------------------------------------------------------


def test_a_config_that_still_leaves_s_unsigned_is_warned_by_check_and_at_start(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    config = relay_dir / "config.toml"
    text = config.read_text()
    assert run_cli("check", "--local", "--config", str(config)).stdout.count("! signing.sign_in_s") == 0
    config.write_text(text.replace("[signing]\n", "[signing]\nsign_simulation = false\n", 1))  # as init wrote
    r = run_cli("check", "--local", "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    [line] = [line for line in r.stdout.splitlines() if "sign_in_s" in line]
    assert line.startswith("! signing.sign_in_s = false") and "ACRF-122" in line and "every environment" in line
    dmfa_in_s = fi_name(1, app="DMFA", env="S")
    (relay_dir / "spool" / "outbox" / dmfa_in_s).write_bytes(b"<DmfA/>\r\n")
    sent = run_cli("send", "--once", "--config", str(config))
    assert sent.returncode == 0 and "environment_s_unsigned" in sent.stderr, sent.stdout + sent.stderr
    assert not (relay_dir / "remote" / "INTEST-S" / f"FS{dmfa_in_s[2:]}").exists()  # the setting still works


def test_old_and_new_signing_key_both_set_names_the_environment_variable_that_sets_one(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    config = relay_dir / "config.toml"
    config.write_text(config.read_text().replace("[signing]\n", "[signing]\nsign_in_s = true\n", 1))
    env = {"ONSS_RELAY__SIGNING__SIGN_SIMULATION": "false"}
    r = run_cli("check", "--local", "--config", str(config), env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "environment variable ONSS_RELAY__SIGNING__SIGN_SIMULATION sets signing.sign_simulation" in r.stderr
    assert f"{config} sets signing.sign_in_s" in r.stderr and "keep only signing.sign_in_s" in r.stderr


def test_status_shows_a_dmfa_circuit_test_as_answered_by_its_acrf_and_nothing_waiting(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    config = str(relay_dir / "config.toml")
    circuit = fi_name(1, app="DMFA")  # DmfA in T: a circuit test
    (relay_dir / "spool" / "outbox").mkdir(parents=True)
    (relay_dir / "spool" / "outbox" / circuit).write_bytes(b"<DmfA/>\r\n")
    assert run_cli("send", "--once", "--config", config).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()  # an ACRF, no notification
    assert run_cli("poll", "--once", "--config", config).returncode == 0
    table = run_cli("status", "--config", config).stdout
    [row] = [line for line in table.splitlines() if line.startswith(go_of(circuit))]
    assert "circuit test answered by its ACRF: accepted, done" in row and "waiting" not in row
    story = run_cli("status", go_of(circuit), "--config", config).stdout
    assert "circuit test: done, nothing waits" in story and "waiting for the notification" not in story
    listed = json.loads(run_cli("status", "--json", "--config", config).stdout)
    [doc] = [s for s in listed["sets"] if s["set"] == go_of(circuit)]
    assert doc["circuit_test"] and "waiting" not in doc["result"] and doc["overdue"] is None
    one = json.loads(run_cli("status", "--json", go_of(circuit), "--config", config).stdout)["set"]
    assert one["circuit_test"] and one["result"].startswith("circuit test answered by its ACRF")


def _send_and_warnings(relay_dir: Path, files: dict[str, bytes]) -> tuple[str, dict[str, list[str]]]:
    """Given outbox files, run `send --once`; return its output and each set's warnings, by GO name."""
    from tests.helpers import run_cli

    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (outbox / name).write_bytes(content)
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"))
    results = relay_dir / "spool" / "results"
    gos = {go_of(n) for n in files}
    warnings = {go: json.loads((results / f"{go}.json").read_text())["warnings"] for go in gos}
    return r.stdout + r.stderr, warnings


def test_the_parts_of_one_document_are_checked_as_one_byte_stream(relay_dir: Path) -> None:
    document = '<?xml version="1.0" encoding="UTF-8"?>\r\n<Dimona>café crème</Dimona>\r\n'.encode()
    cut = document.index("é".encode()) + 1  # inside the two bytes of é
    one, two = fi_name(1, part=1, total=2), fi_name(1, part=2, total=2)
    out, warnings = _send_and_warnings(relay_dir, {one: document[:cut], two: document[cut:]})
    assert "sent 1 set(s)" in out, out
    assert warnings[go_of(one)] == []  # part 2 has no prolog, and the cut fell inside é: both as they should be
    broken = fi_name(2, part=1, total=2), fi_name(2, part=2, total=2)
    out, warnings = _send_and_warnings(relay_dir, {broken[0]: document[:cut], broken[1]: b"\xff" + document[cut:]})
    assert warnings[go_of(broken[0])] == [
        f"{broken[1]}: byte 0 is not valid UTF-8, but its XML prolog declares UTF-8"
    ], out


def test_utf_16_declared_as_such_is_no_warning_and_utf_16_declared_utf_8_is(relay_dir: Path) -> None:
    text = '<?xml version="1.0" encoding="UTF-16"?>\r\n<Dimona>café</Dimona>\r\n'
    with_bom, without_bom = fi_name(1), fi_name(2)
    mislabelled = fi_name(3)
    files = {
        with_bom: text.encode("utf-16"),  # byte-order mark, then UTF-16 in this machine's order
        without_bom: text.encode("utf-16-be"),  # appendix F: 00 3C 00 3F
        mislabelled: text.replace("UTF-16", "UTF-8").encode("utf-16-le"),
    }
    out, warnings = _send_and_warnings(relay_dir, files)
    assert "sent 3 set(s)" in out, out
    assert warnings[go_of(with_bom)] == [] and warnings[go_of(without_bom)] == []
    assert warnings[go_of(mislabelled)] == [
        f"{mislabelled}: its first bytes are UTF-16-LE, but its XML prolog declares UTF-8"
    ]


def test_a_prolog_naming_a_codec_that_is_no_character_encoding_is_a_warning_and_others_are_sent(
    relay_dir: Path,
) -> None:
    hexed, plain = fi_name(1), fi_name(2)
    files = {hexed: b'<?xml version="1.0" encoding="hex"?>\r\n<Dimona/>\r\n', plain: b"<Dimona/>\r\n"}
    out, warnings = _send_and_warnings(relay_dir, files)
    assert "sent 2 set(s)" in out and "unexpected error" not in out, out
    assert warnings[go_of(hexed)] == [
        f"{hexed}: its XML prolog declares encoding 'hex', which is not a character encoding"
    ]
    assert warnings[go_of(plain)] == []
    assert (relay_dir / "remote" / "INTEST" / hexed).read_bytes() == files[hexed]  # sent as it is


def test_ftp_with_the_sftp_port_init_wrote_is_a_configuration_error_naming_remote_port(relay_dir: Path) -> None:
    from tests.conftest import remote_config_text
    from tests.helpers import run_cli

    config = relay_dir / "ftp.toml"
    remote = 'transport = "ftp"\nhost = "ftp.example"\nusername = "techuser01"\npassword_file = "keys/ftp.pass"\n'
    config.write_text(remote_config_text(remote + "port = 8022\n"))  # as `init` writes it
    r = run_cli("check", "--local", "--config", str(config))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert "ftp.toml: remote.port: 8022 is the SFTP channel's port" in r.stderr and "uses FTP's, 21" in r.stderr
    config.write_text(remote_config_text(remote + "port = 2121\n"))  # a port the ONSS gave: kept
    assert load_config(config, environ={}).remote.port == 2121


def _eid_like_identity(keys: Path) -> tuple[Path, Path]:
    """Given a folder, write a key and a certificate issued by "SERIALNUMBER=200803, CN=Citizen CA, C=BE" to a
    subject shaped like a Belgian eID's (surname, given name, serial number); return their paths."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    oid = x509.NameOID
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name(
        [x509.NameAttribute(oid.COUNTRY_NAME, "BE"), x509.NameAttribute(oid.COMMON_NAME, "Citizen CA")]
        + [x509.NameAttribute(oid.SERIAL_NUMBER, "200803")]
    )
    subject = x509.Name(
        [x509.NameAttribute(oid.COUNTRY_NAME, "BE"), x509.NameAttribute(oid.COMMON_NAME, "Jan Peeters (Signature)")]
        + [x509.NameAttribute(oid.SURNAME, "Peeters"), x509.NameAttribute(oid.GIVEN_NAME, "Jan")]
        + [x509.NameAttribute(oid.SERIAL_NUMBER, "71715100070")]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder(issuer_name=issuer, subject_name=subject, public_key=key.public_key())
        .serial_number(0x10000000000031138B31BA)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=400))
        .sign(ca_key, hashes.SHA256())
    )
    key_path, cert_path = keys / "eid.key", keys / "eid.crt"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_certificate_and_check_print_names_with_the_portal_s_attribute_names(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    key, cert = _eid_like_identity(relay_dir / "keys")
    config = relay_dir / "config.toml"
    signing = 'key = "keys/signer.p12"\npassword_file = "keys/signer.pass"\n'
    assert signing in config.read_text()
    config.write_text(config.read_text().replace(signing, f'key = "{key}"\ncertificate = "{cert}"\n'))
    r = run_cli("certificate", "-o", str(relay_dir / "eid.cer"), "--config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Issuer (certificate provider)  : SERIALNUMBER=200803, CN=Citizen CA, C=BE" in r.stdout  # seed 002
    subject = "SERIALNUMBER=71715100070, GIVENNAME=Jan, SURNAME=Peeters, CN=Jan Peeters (Signature), C=BE"
    assert f"Subject (certificate owner)    : {subject}" in r.stdout
    assert "Serial number (hexadecimal)    : 10 00 00 00 00 00 31 13 8b 31 ba" in r.stdout
    checked = run_cli("check", "--local", "--config", str(config))
    assert f"✓ signing certificate: {subject}, " in checked.stdout, checked.stdout + checked.stderr
    assert "2.5.4." not in r.stdout + checked.stdout  # no OIDs


def test_certificate_to_a_path_it_cannot_write_names_the_path_given(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    config = str(relay_dir / "config.toml")
    missing = run_cli("certificate", "-o", "/nonexistent/x.cer", "--config", config)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "/nonexistent/x.cer: cannot write the certificate there: the folder /nonexistent does not exist" in (
        missing.stderr
    )
    folder = run_cli("certificate", "-o", str(relay_dir), "--config", config)
    assert folder.returncode == 2 and folder.stderr.count("\n") == 1, folder.stderr
    assert f"{relay_dir}: is a folder; give the .cer file to write" in folder.stderr
    assert ".tmp" not in missing.stderr + folder.stderr and not list(relay_dir.glob(".*.tmp"))


def test_a_technical_user_older_than_the_rule_has_a_documented_escape(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    example = Path(__file__).resolve().parents[1] / "config" / "example.toml"  # remote.host sftp.socialsecurity.be
    refused = run_cli("check", "--local", "--config", str(example), env={"ONSS_RELAY__REMOTE__USERNAME": "EXP"})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "if the portal really shows this name" in refused.stderr
    assert "set remote.check_username = false" in refused.stderr
    config = tmp_path / "config.toml"
    config.write_text(example.read_text().replace("check_username = true", "check_username = false"))
    env = {"ONSS_RELAY__REMOTE__USERNAME": "EXP", "ONSS_RELAY__PATHS__ROOT": str(tmp_path / "spool")}
    assert load_config(config, environ=env).remote.username == "EXP"  # the seed 002 screenshot's user
    kept = run_cli("check", "--local", "--config", str(config), env=env)
    assert f"✓ configuration: {config}" in kept.stdout and "remote.username" not in kept.stderr, kept.stderr
