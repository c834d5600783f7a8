"""`onss-relay init`: an RSA 4096 SSH key pair, a configuration from the example, and the next steps."""

from __future__ import annotations

import importlib.resources
import os
import pwd
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from onss_relay.commands.check_access import missing_service_user, service_user
from onss_relay.errors import UsageError

# Files beside config.toml are named relative to it (the loader resolves them against the config's folder), so
# the folder works wherever it is mounted: /etc/onss-relay on a server, a read-only volume in a container.
EXAMPLE_KEYS = {
    'root = "/var/lib/onss-relay"': 'root = "{state}"',
    'outbox = "/var/lib/onss-relay/outbox"': 'outbox = "{state}/outbox"',
    'inbox = "/var/lib/onss-relay/inbox"': 'inbox = "{state}/inbox"',
    'key = "/etc/onss-relay/signer.p12"': 'key = "signer.p12"',
    'password_file = "/etc/onss-relay/signer.pass"': 'password_file = "signer.pass"',
    'private_key = "/etc/onss-relay/id_rsa"': 'private_key = "id_rsa"',
    'known_hosts = "/etc/onss-relay/known_hosts"': 'known_hosts = "known_hosts"',
}
# Who may read what: the configuration is the service group's (0640: whoever may read `status` is in that group);
# the secrets (SSH key, signing key and its password) are the service user's alone (0600), never its group's.
# Run as root with the service account present, init sets both; a container: `chown -R 10001:10001`.
PRIVATE = 0o640
SECRET = 0o600
SECRETS = ("id_rsa", "signer.p12", "signer.pass")
SHARED = {"config.toml": PRIVATE, "known_hosts": 0o644, "id_rsa.pub": 0o644}


def example_config() -> str:
    return importlib.resources.files("onss_relay.data").joinpath("example.toml").read_text()


def init_directory(directory: Path, out: TextIO, state: Path | None = None) -> int:
    """Given a folder, write id_rsa(.pub), config.toml and an empty known_hosts there, keeping any that exist
    (run twice, same result: init never overwrites); print what it made and the next steps; return 0."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, config = directory / "id_rsa", directory / "config.toml"
    kept = [p.name for p in (key_path, directory / "id_rsa.pub", config) if p.exists()]
    public = _key_pair(key_path)
    (directory / "known_hosts").touch(mode=0o644, exist_ok=True)
    if not config.exists():
        text = example_config()
        for old, new in EXAMPLE_KEYS.items():
            text = text.replace(old, new.format(dir=directory.absolute(), state=state or "/var/lib/onss-relay"))
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    if kept:
        print(f"Kept as they were (init never overwrites): {', '.join(kept)}", file=out)
    if (user := service_user()) is not None:
        print(set_owners(directory, user), file=out)
    elif missing := missing_service_user():
        print(f"! {missing}", file=out)
    print(
        f"""Created in {directory}:
  id_rsa, id_rsa.pub   SSH key pair for the transfer point (the private key never leaves this machine)
  config.toml          configuration from the documented example; edit sender.number and remote.username
  known_hosts          empty: add the transfer point's host key (step 3)

Public key to upload for your technical user on the social security portal:

{public.decode().strip()}

Next steps:
  1. Your signing certificate comes from a certificate authority (a qualified certificate, as PKCS#12):
     put it at {directory}/signer.p12 and its password alone in {directory}/signer.pass, then run this
     init again as root: it gives them to the service user alone (mode 600; see the README for containers);
     then write the .cer the portal asks for (never upload the .p12, it holds the private key):
       onss-relay certificate --config {config} -o signer.cer
  2. On the portal (www.socialsecurity.be, as a social security professional, local manager of the company):
     Structured messages > Register configuration data > contact person > channel SFTP: upload the SSH public
     key above and the public part (.cer) of your qualified signing certificate (step 1), choose the
     applications to send over SFTP; then name the technical user (8 to 20 characters, a-z and 0-9 only)
     and confirm. The sender number it is given (later under Access management > Structured messages >
     Information) goes in sender.number, the technical user in remote.username.
  3. Fetch the server's host key, check its fingerprint with the ONSS, then keep it:
       ssh-keyscan -p 8022 sftp.socialsecurity.be > {directory}/known_hosts
       ssh-keygen -lf {directory}/known_hosts
  4. Run: onss-relay check --config {config}""",
        file=out,
    )
    return 0


def _key_pair(key_path: Path) -> bytes:
    """Given where the SSH private key goes, make an RSA 4096 pair there unless one exists; return the public key
    line (as id_rsa.pub holds it)."""
    pub_path = key_path.with_name(key_path.name + ".pub")
    if key_path.exists():
        if not pub_path.exists():
            raise UsageError(f"{key_path} exists without {pub_path.name}; init never overwrites (move it away first)")
        return pub_path.read_bytes()
    key = rsa.generate_private_key(65537, 4096)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path.write_bytes(public + b" onss-relay\n")
    return public + b" onss-relay\n"


def set_owners(directory: Path, user: pwd.struct_passwd) -> str:
    """Given the config folder and the service account (init run as root), give the secrets present to the
    account alone (0600) and the rest to root and its group (the folder 0750); return what was done."""
    os.chown(directory, 0, user.pw_gid)
    directory.chmod(0o750)
    for name in SECRETS:
        if (directory / name).exists():
            os.chown(directory / name, user.pw_uid, user.pw_gid)
            (directory / name).chmod(SECRET)
    for name, mode in SHARED.items():
        if (directory / name).exists():
            os.chown(directory / name, 0, user.pw_gid)
            (directory / name).chmod(mode)
    present = [n for n in SECRETS if (directory / n).exists()]
    return (
        f"Secrets ({', '.join(present)}) readable by {user.pw_name} alone (600); the rest by its group (640):"
        " whoever may read status (that group) never reads a key"
    )
