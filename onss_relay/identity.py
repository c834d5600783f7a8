"""The signing identity: load a PKCS#12 or PEM key with its certificate, check validity and expiry.

Also makes self-signed identities for the demo and the tests. Signing itself: ``signature.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from onss_relay.config import Config, read_secret
from onss_relay.errors import CertificateError

log = structlog.get_logger(__name__)

# certificates come from a certificate authority; the portal only registers their public part (seeds 002, 003)
RENEW = (
    "get a new one from your certificate authority and register its .cer on the social security portal"
    " (onss-relay certificate -o FILE.cer writes it): an unregistered certificate is refused"
)


def load_signing_identity(cfg: Config) -> Identity:
    """Given the configuration, load the signing identity and refuse an expired or not-yet-valid one."""
    s = cfg.signing
    identity = load_identity(s.key, s.certificate, read_secret(s.password_file, "signing.password_file"))
    warning = check_certificate(identity, warning_days=s.expiry_warning_days)
    if warning:
        log.warning("certificate_expiring", detail=warning, days_left=days_left(identity))
    return identity


@dataclasses.dataclass(frozen=True)
class Identity:
    """A private key and its certificate (plus any chain), and the file they came from."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    source: Path

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc

    @property
    def not_before(self) -> dt.datetime:
        return self.certificate.not_valid_before_utc


def load_identity(key_path: Path, certificate_path: Path | None = None, password: bytes | None = None) -> Identity:
    """Given a PKCS#12 file, or a PEM key and PEM certificate, and an optional password, return the Identity."""
    try:
        data = key_path.read_bytes()
    except OSError as e:
        raise CertificateError(f"{key_path}: cannot read signing key: {e.strerror}") from None
    if b"-----BEGIN" in data:
        return _load_pem(key_path, data, certificate_path, password)
    return _load_pkcs12(key_path, data, password)


def _load_pkcs12(path: Path, data: bytes, password: bytes | None) -> Identity:
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        hint = "no password_file is set" if password is None else "is the password in password_file right?"
        raise CertificateError(f"{path}: cannot open the PKCS#12 file ({hint})") from None
    if key is None or cert is None:
        raise CertificateError(f"{path}: the PKCS#12 file holds no private key and certificate pair")
    return Identity(_check_key_type(path, key), cert, tuple(extra), path)


def _load_pem(path: Path, data: bytes, certificate_path: Path | None, password: bytes | None) -> Identity:
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:
        raise CertificateError(
            f"{path}: the PEM key is encrypted and no password_file is set (or it is not encrypted and one is)"
        ) from None
    except ValueError:
        raise CertificateError(f"{path}: cannot load the PEM private key (wrong password or not a key)") from None
    cert_source = certificate_path or path
    try:
        certs = x509.load_pem_x509_certificates(cert_source.read_bytes())
    except (OSError, ValueError):
        raise CertificateError(f"{cert_source}: no PEM certificate found (set signing.certificate)") from None
    ours = _public_der(key.public_key())
    mine = [c for c in certs if _public_der(c.public_key()) == ours]
    if not mine:
        raise CertificateError(f"{cert_source}: no certificate in it matches the private key {path}")
    return Identity(_check_key_type(path, key), mine[0], tuple(c for c in certs if c is not mine[0]), path)


def _public_der(public: object) -> bytes:
    """A public key's SubjectPublicKeyInfo DER: the same bytes for a key and the certificate that carries it."""
    assert hasattr(public, "public_bytes")
    der: bytes = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _check_key_type(path: Path, key: object) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{path}: only RSA and EC keys can sign declarations, not {type(key).__name__}")
    return key


def check_certificate(identity: Identity, now: dt.datetime | None = None, warning_days: int = 30) -> str | None:
    """Given an Identity, raise CertificateError if it cannot sign now; return a warning when it expires soon."""
    now = now or dt.datetime.now(dt.UTC)
    not_before, not_after = identity.not_before, identity.not_after
    if not_before <= now <= not_after and days_left(identity, now) > warning_days:
        return None  # the signer asks before every FS: its dates are written out only when something is said
    dates = f"valid from {not_before:%Y-%m-%d %H:%M} to {not_after:%Y-%m-%d %H:%M} UTC"
    if now < not_before:
        raise CertificateError(f"{identity.source}: the signing certificate is not valid yet ({dates})")
    if now > not_after:
        raise CertificateError(f"{identity.source}: the signing certificate has expired ({dates}); {RENEW}")
    left = days_left(identity, now)
    return f"{identity.source}: the signing certificate expires in {left} days ({dates}); {RENEW}"


@dataclasses.dataclass(frozen=True)
class PortalView:
    """A certificate as the portal shows it once registered: issuer, serial (decimal and hex), expiry."""

    subject: str
    issuer: str
    serial_decimal: str
    # two lower-case hex digits per byte, separated by spaces: "10 00 00 00 00 00 31 13 8b 31 ba" (seed 002)
    serial_hex: str
    expires: str  # DD/MM/YYYY
    self_signed: bool


# the attribute names the portal (Java's X.500 names) writes where RFC 4514 knows none and would print OIDs
PORTAL_NAMES = {
    x509.NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    x509.NameOID.GIVEN_NAME: "GIVENNAME",
    x509.NameOID.SURNAME: "SURNAME",
    x509.NameOID.TITLE: "T",
    x509.NameOID.INITIALS: "INITIALS",
    x509.NameOID.GENERATION_QUALIFIER: "GENERATION",
    x509.NameOID.DN_QUALIFIER: "DNQUALIFIER",
    x509.NameOID.EMAIL_ADDRESS: "EMAILADDRESS",
}


def portal_dn(name: x509.Name) -> str:
    """Given a distinguished name, return it as the portal writes it: most specific first, attributes by name
    ("SERIALNUMBER=200803, CN=Citizen CA, C=BE"; a Belgian eID's "SURNAME=…, GIVENNAME=…"), never as OIDs."""
    return ", ".join(rdn.rfc4514_string(PORTAL_NAMES) for rdn in reversed(name.rdns))


def is_self_signed(cert: x509.Certificate) -> bool:
    """Given a certificate, return True when it is its own issuer (made by `demo` or by hand, not by a CA)."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def portal_view(cert: x509.Certificate) -> PortalView:
    """Given a certificate, return what the portal shows of it after its .cer is uploaded."""
    serial = cert.serial_number
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return PortalView(
        portal_dn(cert.subject),
        portal_dn(cert.issuer),
        str(serial),
        raw.hex(" "),
        f"{cert.not_valid_after_utc:%d/%m/%Y}",
        is_self_signed(cert),
    )


def days_left(identity: Identity, now: dt.datetime | None = None) -> int:
    now = now or dt.datetime.now(dt.UTC)
    return (identity.not_after - now).days


def self_signed_identity(
    directory: Path,
    common_name: str = "onss-relay demo",
    days: int = 365,
    key_type: str = "ec",
    password: bytes | None = None,
) -> Identity:
    """Given a directory, create a self-signed key+certificate as PKCS#12 (signer.p12) and PEM there; return it."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = ec.generate_private_key(ec.SECP256R1()) if key_type == "ec" else rsa.generate_private_key(65537, 2048)
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    p12 = directory / "signer.p12"
    p12.touch(mode=0o600)  # a private key: its owner's alone, as `check` asks
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"signer", key, cert, None, enc))
    (directory / "signer.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(key, cert, (), p12)
