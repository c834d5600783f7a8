"""`onss-relay certificate`: the public part of the signing certificate, as the portal asks for it.

The portal registers a qualified certificate's `.cer` (DER, public key only: never the PKCS#12, which holds
the private key) and then shows its issuer, serial number in decimal and hexadecimal, and expiry date.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TextIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from onss_relay.config import Config, read_secret
from onss_relay.durable import atomic_write
from onss_relay.errors import UsageError
from onss_relay.identity import Identity, days_left, load_identity, portal_view

MAX_CER_BYTES = 1 << 20  # a certificate is a few KB; a bigger file is something else
SELF_SIGNED = "self-signed: fine for the demo and the simulator, refused by the ONSS (use a qualified certificate)"


def default_output(cfg: Config) -> Path:
    """Given the configuration, return where the .cer goes without -o: <key name>.cer in the current folder."""
    return Path(cfg.signing.key.stem + ".cer")


def _write(path: Path, der: bytes) -> None:
    """Given the output path the user gave and the DER bytes, write them there atomically; raise UsageError in
    one sentence naming that path (never the temporary file beside it) when it cannot be written."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give the .cer file to write, like -o {path / 'signer.cer'}")
    if not path.parent.is_dir():
        raise UsageError(f"{path}: cannot write the certificate there: the folder {path.parent} does not exist")
    if path.exists() and not _is_certificate(path):  # -o signer.p12 would have lost the private key
        raise UsageError(
            f"{path}: is there and is not a certificate (.cer): it was left as it is; give the path of a new .cer"
            " file, like -o signer.cer"
        )
    try:
        atomic_write(path, der)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the certificate there: {e.strerror or e}") from None


def _is_certificate(path: Path) -> bool:
    """Given an existing path, return True when it holds one DER certificate (a .cer written before), which may
    be written again; anything else (a key, a password, a PEM file, a folder's special file) is kept."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CER_BYTES:
            return False
        x509.load_der_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def write_certificate(cfg: Config, output: Path | None, out: TextIO) -> int:
    """Given the configuration and an output path (or None), write the signing certificate's DER .cer there,
    print what the portal will show of it, and return the exit code."""
    s = cfg.signing
    identity = load_identity(s.key, s.certificate, read_secret(s.password_file, "signing.password_file"))
    path = output or default_output(cfg)
    _write(path, identity.certificate.public_bytes(Encoding.DER))
    view = portal_view(identity.certificate)
    print(
        f"""Wrote {path}: the public certificate only (DER), to upload on the social security portal
(Structured messages, the technical user's SFTP channel: "certificate").
The portal will show:
  Subject (certificate owner)    : {view.subject}
  Issuer (certificate provider)  : {view.issuer}
  Expiry date                    : {view.expires}
  Serial number (decimal)        : {view.serial_decimal}
  Serial number (hexadecimal)    : {view.serial_hex}""",
        file=out,
    )
    if view.self_signed:
        print(f"Warning: this certificate is {SELF_SIGNED}.", file=out)
    if dates := _dates_warning(identity, cfg.signing.expiry_warning_days):
        print(f"Warning: this certificate {dates}.", file=out)
    return 0


def _dates_warning(identity: Identity, warning_days: int) -> str | None:
    """Given the identity and signing.expiry_warning_days, say when registering its .cer is work for nothing
    or nearly: expired, not valid yet, or in its last days (what it signs then is refused, ACRF-125)."""
    left = days_left(identity)
    if identity.not_after < dt.datetime.now(dt.UTC):
        return (
            f"has expired ({identity.not_after:%d/%m/%Y}): the ONSS refuses what it signs (ACRF-125); get a new one"
            " from your certificate authority and register that one's .cer"
        )
    if identity.not_before > dt.datetime.now(dt.UTC):
        return f"is not valid yet (from {identity.not_before:%d/%m/%Y %H:%M} UTC): nothing can be signed with it before"
    if left <= warning_days:
        return (
            f"expires in {left} days: get the next one from your certificate authority now and register its .cer"
            " too (a certificate not registered is refused)"
        )
    return None
