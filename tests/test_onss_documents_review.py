"""Issue 28, what a second hostile review (audit28) reproduced: texts that still sent the user to the portal to
renew a certificate, and the ONSS's host written in another case or with a final dot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from onss_relay.commands.submit import submit
from onss_relay.config import Config, load_config
from onss_relay.errors import ConfigError
from onss_relay.journal import State
from onss_relay.names import Env, upload_folder
from onss_relay.pipeline import Relay
from onss_relay.simulator import Simulator
from tests.conftest import SENDER
from tests.fixtures.sshd import SshServer
from tests.test_config import MINIMAL as CONFIG_MINIMAL
from tests.test_uploader_sftp import assert_order_and_once

ROOT = Path(__file__).resolve().parents[1]
# "renew it on the portal", "renewed on the ONSS portal", "get a certificate from the portal"
ON_THE_PORTAL = re.compile(
    r"(renew\w*|get|obtain|download)\b[^.\n]{0,30}\b(on|from) the (ONSS |social security )?portal", re.I
)


def shipped_texts() -> list[Path]:
    """Every text a user or an operator reads: code messages, data, config examples, alert rules, README."""
    files = [ROOT / "README.md", *sorted((ROOT / "monitoring").rglob("*.yml")), *sorted((ROOT / "config").glob("*"))]
    files += sorted((ROOT / "onss_relay").rglob("*.py")) + sorted((ROOT / "onss_relay" / "data").glob("*"))
    return [f for f in files if f.is_file()]


def test_no_shipped_text_says_a_certificate_is_renewed_on_or_comes_from_the_portal() -> None:
    # seeds 002 and 003: the portal registers the .cer of a qualified certificate from a certificate authority
    said = [
        f"{f.relative_to(ROOT)}:{n}: {line.strip()}"
        for f in shipped_texts()
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), start=1)
        if ON_THE_PORTAL.search(line)
    ]
    assert said == []
    rules = (ROOT / "monitoring" / "onss-relay.rules.yml").read_text()
    [alert] = [block for block in rules.split("- alert: ") if block.startswith("OnssRelayCertificateExpiring")]
    assert "certificate authority" in alert and "register" in alert and ".cer" in alert


MINIMAL = CONFIG_MINIMAL.replace('transport = "local"\n', "")  # the [remote] lines follow


@pytest.mark.parametrize("host", ["SFTP.socialsecurity.be", "sftp.socialsecurity.be.", "Sftp.SocialSecurity.BE."])
def test_the_onss_host_in_another_case_or_with_a_final_dot_is_still_the_onss_s(tmp_path: Path, host: str) -> None:
    config = tmp_path / "config.toml"
    ftp = f'transport = "ftp"\nhost = "{host}"\nusername = "techuser01"\npassword_file = "pw"\n'
    config.write_text(MINIMAL + ftp)
    with pytest.raises(ConfigError, match=r"remote\.host: is required when remote\.transport = 'ftp'"):
        load_config(config, environ={})  # the SFTP host kept for FTP, in capitals or with the root's dot
    sftp = f'host = "{host}"\nusername = "EXP"\nprivate_key = "id_rsa"\nknown_hosts = "known_hosts"\n'
    config.write_text(MINIMAL + sftp)
    with pytest.raises(ConfigError, match="'EXP' is not a technical user name"):
        load_config(config, environ={})
    config.write_text(MINIMAL + sftp.replace('"EXP"', '"techuser01"'))
    assert load_config(config, environ={}).remote.host == host  # kept as written


def test_certificate_never_writes_over_a_file_that_is_not_a_certificate(relay_dir: Path) -> None:
    from tests.helpers import run_cli

    config = relay_dir / "config.toml"
    key = relay_dir / "keys" / "signer.p12"
    before = key.read_bytes()
    for target in (key, relay_dir / "keys" / "signer.pass", config):  # the private key, its password, the config
        kept = target.read_bytes()
        r = run_cli("certificate", "-o", str(target), "--config", str(config))
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stdout + r.stderr
        assert f"{target}: is there and is not a certificate (.cer): it was left as it is" in r.stderr
        assert target.read_bytes() == kept
    assert key.read_bytes() == before
    cer = relay_dir / "signer.cer"
    for _ in range(2):  # a .cer written before is written again (a rotation's second run)
        again = run_cli("certificate", "-o", str(cer), "--config", str(config))
        assert again.returncode == 0, again.stdout + again.stderr
    assert cer.read_bytes()[:1] == b"\x30"  # DER SEQUENCE


def test_a_setting_an_environment_variable_gives_is_named_by_that_variable_not_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(MINIMAL + 'username = "techuser01"\nprivate_key = "id_rsa"\nknown_hosts = "known_hosts"\n')
    env = {"ONSS_RELAY__REMOTE__USERNAME": "EXP"}  # Docker: the file says techuser01, the variable EXP
    with pytest.raises(ConfigError) as refused:
        load_config(config, environ=env)
    said = str(refused.value)
    assert said.startswith("environment variable ONSS_RELAY__REMOTE__USERNAME: remote.username: 'EXP' is not"), said
    assert str(config) not in said  # the file never mentions EXP
    config.write_text(MINIMAL + 'username = "EXP"\nprivate_key = "id_rsa"\nknown_hosts = "known_hosts"\n')
    with pytest.raises(ConfigError, match=f"^{config}: remote.username: 'EXP' is not"):
        load_config(config, environ={})


@pytest.mark.parametrize("codec", ["cp500", "IBM037", "UTF-16", "utf-32"])
def test_an_ascii_file_declaring_an_encoding_that_cannot_read_its_own_prolog_is_a_warning(
    tmp_path: Path, codec: str
) -> None:
    from onss_relay.declaration_encoding import encoding_problem

    fi = tmp_path / "FI.DIMN.123456.20260101.00001.T.1.1"
    fi.write_bytes(f'<?xml version="1.0" encoding="{codec}"?>\r\n<Dimona>x</Dimona>\r\n'.encode("ascii"))
    said = encoding_problem([fi])  # an XML parser reads these bytes as EBCDIC (or UTF-16/32): not even the prolog
    assert said is not None and "its first bytes are ASCII" in said and f"declares {codec}" in said, said
    fi.write_bytes(b'<?xml version="1.0" encoding="ISO-8859-1"?>\r\n<Dimona>caf\xe9</Dimona>\r\n')
    assert encoding_problem([fi]) is None  # an ASCII-compatible encoding, as declared


def test_drs_sets_submitted_without_part_fields_go_over_sftp_signed_and_are_answered(
    sftp_cfg: Config, sshd: SshServer, tmp_path: Path
) -> None:
    """WECH, AOAT, ZIMA as `submit` names them (FI.….E, seed 001), in T and, for ZIMA (DRS AMI), S: each part
    and its FS closed before the GO, the GO written once and named as the FI, answered by the simulator."""
    content = tmp_path / "drs.xml"
    sets = [("WECH", "T"), ("AOAT", "T"), ("ZIMA", "S")]
    names = []
    for i, (app, env) in enumerate(sets):
        content.write_bytes(f"<DRS n='{i}'>{app}</DRS>\r\n".encode())  # each its own content
        [name] = submit(sftp_cfg, [content], app, env, None, parts=False)
        names.append(name)
    relay = Relay(sftp_cfg)
    try:
        report = relay.send_once(wait_for_settle=False)
        gos = ["GO" + n[2:] for n in names]  # no part fields: the GO is the FI's name with prefix GO
        assert sorted(report.upload.sent) == sorted(gos) and report.upload.error is None
        for fi, go, (_, env) in zip(names, gos, sets, strict=True):
            assert fi.endswith(f".{env}") and (sshd.home / upload_folder(Env(env)) / fi).is_file()
            assert (sshd.home / upload_folder(Env(env)) / ("FS" + fi[2:])).is_file()  # S too
            row = relay.journal.get_set(go)
            assert row is not None and row.parts == [fi] and row.data.warnings == ()
            assert_order_and_once(sshd, go, [fi], ["FS" + fi[2:]])
        Simulator(sshd.home, SENDER).process()
        relay.poll_once()
        for go in gos:
            row = relay.journal.get_set(go)
            assert row is not None and row.state == State.NOTIFIED, (go, row and row.state)
    finally:
        relay.close()


def test_submit_says_at_once_when_the_documents_do_not_list_the_environment(relay_dir: Path) -> None:
    """The README's own example (`submit … --app DMFA --env T`) is only a circuit test: the one who submits is
    told then, not only in the result hours later; the file is placed all the same (a warning, no refusal)."""
    from tests.helpers import run_cli

    content = relay_dir / "decl.xml"
    config = str(relay_dir / "config.toml")
    said = {}
    for i, (app, env) in enumerate([("DIMN", "S"), ("DMFA", "T"), ("WECH", "T"), ("DMFA", "S")]):
        content.write_bytes(f"<D n='{i}'/>\r\n".encode())
        r = run_cli("submit", str(content), "--app", app, "--env", env, "--config", config)
        assert r.returncode == 0 and r.stdout.startswith(f"FI.{app}.") and r.stdout.count("\n") == 1, r
        assert (relay_dir / "spool" / "outbox" / r.stdout.strip()).is_file()
        said[app, env] = r.stderr
    assert "declaration_warning" in said["DIMN", "S"] and "which the ONSS documents do not list" in said["DIMN", "S"]
    assert "only a circuit test" in said["DMFA", "T"]
    assert "declaration_warning" not in said["WECH", "T"] + said["DMFA", "S"]


def test_certificate_says_when_the_cer_it_writes_is_expired_or_expiring(relay_dir: Path) -> None:
    """A .cer registered on the portal for a certificate past its date (or in its last days) is work for
    nothing: the transfer point refuses what it signs (ACRF-125); the command writes it and says so."""
    import datetime as dt

    from tests.helpers import run_cli
    from tests.test_signing import make_identity

    config = relay_dir / "config.toml"
    text = config.read_text()
    signing = 'key = "keys/signer.p12"\npassword_file = "keys/signer.pass"\n'
    assert signing in text
    said = {}
    for name, days, ago in (("expired", 10, 20), ("expiring", 30, 10), ("fresh", 365, 0)):
        (relay_dir / name).mkdir()
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=ago, minutes=1)
        p12, _, _ = make_identity(relay_dir / name, "p256", days=days, start=start)
        config.write_text(text.replace(signing, f'key = "{p12}"\n'))
        r = run_cli("certificate", "-o", str(relay_dir / f"{name}.cer"), "--config", str(config))
        assert r.returncode == 0 and (relay_dir / f"{name}.cer").is_file(), r.stdout + r.stderr
        said[name] = r.stdout
    assert "Warning: this certificate has expired" in said["expired"] and "ACRF-125" in said["expired"]
    assert "Warning: this certificate expires in 19 days" in said["expiring"], said["expiring"]
    assert "certificate authority" in said["expiring"]
    assert "Warning: this certificate expires" not in said["fresh"] and "expired" not in said["fresh"]


def test_demo_never_writes_over_a_real_relay_s_config_or_key(tmp_path: Path) -> None:
    """`demo .` run in /etc/onss-relay (easier since a relative folder works) replaced its config.toml and
    keys/signer.p12 with the demo's; a folder holding another config or key is refused, one sentence, exit 2.
    A folder the demo made before is run again."""
    from tests.helpers import run_cli

    real = tmp_path / "etc-onss-relay"
    (real / "keys").mkdir(parents=True)
    (real / "config.toml").write_text('[sender]\nnumber = "654321"\n')
    (real / "keys" / "signer.p12").write_bytes(b"the only copy of the private key")
    r = run_cli("demo", ".", cwd=real)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stdout + r.stderr
    assert "config.toml: is not the demo's" in r.stderr and "left as it is" in r.stderr
    assert (real / "config.toml").read_text() == '[sender]\nnumber = "654321"\n'
    assert (real / "keys" / "signer.p12").read_bytes() == b"the only copy of the private key"
    assert not (real / "spool").exists() and not (real / "transfer-point").exists()
    (real / "config.toml").unlink()  # a key without a config: still not the demo's to replace
    r = run_cli("demo", str(real))
    assert r.returncode == 2 and "signer.p12: is not the demo's" in r.stderr, r.stdout + r.stderr
    assert (real / "keys" / "signer.p12").read_bytes() == b"the only copy of the private key"
    demo = tmp_path / "demo"
    for _ in range(2):  # the demo's own folder is run again
        again = run_cli("demo", str(demo))
        assert again.returncode == 0, again.stdout + again.stderr
