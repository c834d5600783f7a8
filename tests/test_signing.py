"""Signatures: every layout and key type verifies with the openssl CLI; a changed byte fails everywhere."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from onss_relay import identity, signature
from onss_relay.errors import CertificateError, SignatureError

CONTENTS = {
    "crlf": b"<DmfA>\r\n  <x>1</x>\r\n</DmfA>\r\n",
    "lf": b"<DmfA>\n  <x>1</x>\n</DmfA>\n",
    "no-trailing-newline": b"<DmfA><x>1</x></DmfA>",
    "non-ascii": "<DmfA>Müller € \x00\xff</DmfA>".encode("latin-1", "replace") + bytes(range(256)),
}


def make_identity(
    tmp_path: Path,
    kind: str,
    *,
    days: int = 365,
    start: dt.datetime | None = None,
    password: bytes | None = None,
    pem: bool = False,
) -> tuple[Path, Path | None, Path]:
    """Return (key file, certificate file or None, certificate PEM for openssl -CAfile)."""
    key = {
        "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
        "rsa4096": lambda: rsa.generate_private_key(65537, 4096),
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
    }[kind]()
    start = start or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"test {kind}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    cert_pem = tmp_path / f"{kind}.crt"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if pem:
        key_path = tmp_path / f"{kind}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
        return key_path, cert_pem, cert_pem
    p12 = tmp_path / f"{kind}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"k", key, cert, None, enc))  # type: ignore[arg-type]
    return p12, None, cert_pem


def openssl_verifies(tmp_path: Path, fi: Path, fs_content: bytes, ca: Path) -> bool:
    der = tmp_path / "fs.der"
    der.write_bytes(signature.decode_fs(fs_content))
    r = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(der),
            "-content",
            str(fi),
            "-CAfile",
            str(ca),
            "-out",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rsa2048", "rsa4096", "p256"])
@pytest.mark.parametrize("layout", signature.LAYOUTS)
def test_openssl_accepts_every_layout_and_key(tmp_path: Path, kind: str, layout: str) -> None:
    key, cert, ca = make_identity(tmp_path, kind, password=b"s3cret")
    ident = identity.load_identity(key, cert, b"s3cret")
    for label, content in CONTENTS.items():
        fi = tmp_path / f"FI.{label}"
        fi.write_bytes(content)
        fs = signature.fs_content_for(ident, fi, "sha256", layout)
        assert openssl_verifies(tmp_path, fi, fs, ca), (kind, layout, label)
        assert signature.verify(fi, fs).digest == "sha256"
        fi.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one byte changed
        assert not openssl_verifies(tmp_path, fi, fs, ca)
        with pytest.raises(SignatureError, match="content changed"):
            signature.verify(fi, fs)


def test_layout_shapes() -> None:
    der = bytes(range(256)) * 3
    assert b"\n" not in signature.encode_fs(der, "single-line")
    lines = signature.encode_fs(der, "76-cr").split(b"\r")
    assert all(len(x) == 76 for x in lines[:-2]) and b"\n" not in signature.encode_fs(der, "76-cr")
    crlf = signature.encode_fs(der, "64-crlf")
    assert crlf.endswith(b"\r\n") and all(len(x) == 64 for x in crlf.split(b"\r\n")[:-2])
    for layout in signature.LAYOUTS:
        assert signature.decode_fs(signature.encode_fs(der, layout)) == der


@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_pem_keys_and_other_digests(tmp_path: Path, digest: str) -> None:
    key, cert, ca = make_identity(tmp_path, "p256", pem=True, password=b"pw")
    ident = identity.load_identity(key, cert, b"pw")
    fi = tmp_path / "FI"
    fi.write_bytes(CONTENTS["crlf"])
    fs = signature.fs_content_for(ident, fi, digest, "single-line")
    assert openssl_verifies(tmp_path, fi, fs, ca)
    assert signature.verify(fi, fs).digest == digest


def test_unencrypted_pkcs12(tmp_path: Path) -> None:
    key, _, ca = make_identity(tmp_path, "rsa2048")
    ident = identity.load_identity(key)
    fi = tmp_path / "FI"
    fi.write_bytes(b"x")
    assert openssl_verifies(tmp_path, fi, signature.fs_content_for(ident, fi, "sha256", "single-line"), ca)


def test_wrong_or_missing_password_names_the_file(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "p256", password=b"right")
    with pytest.raises(CertificateError, match=str(key)):
        identity.load_identity(key, None, b"wrong")
    with pytest.raises(CertificateError, match="no password_file"):
        identity.load_identity(key, None, None)
    pem_key, cert, _ = make_identity(tmp_path, "rsa2048", pem=True, password=b"right")
    with pytest.raises(CertificateError, match="encrypted"):
        identity.load_identity(pem_key, cert, None)


def test_expired_and_not_yet_valid_certificates_are_refused(tmp_path: Path) -> None:
    fi = tmp_path / "FI"
    fi.write_bytes(b"x")
    old, _, _ = make_identity(tmp_path, "p256", days=10, start=dt.datetime.now(dt.UTC) - dt.timedelta(days=20))
    with pytest.raises(CertificateError, match=r"expired \(valid from .* to .*\)"):
        signature.sign_file(identity.load_identity(old), fi)
    (tmp_path / "future").mkdir()
    future, _, _ = make_identity(tmp_path / "future", "p256", start=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    with pytest.raises(CertificateError, match="not valid yet"):
        signature.sign_file(identity.load_identity(future), fi)


def test_expiry_warning(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "p256", days=10)
    ident = identity.load_identity(key)
    assert "expires in" in (identity.check_certificate(ident, warning_days=30) or "")
    assert identity.check_certificate(ident, warning_days=5) is None


def test_verify_explains_failures(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "p256")
    ident = identity.load_identity(key)
    fi = tmp_path / "FI"
    fi.write_bytes(b"hello")
    with pytest.raises(SignatureError, match="not base64"):
        signature.verify(fi, b"this is not base64 !!!")
    with pytest.raises(SignatureError, match="not a CMS"):
        signature.verify(fi, signature.encode_fs(b"\x30\x03\x02\x01\x01"))
    good = signature.fs_content_for(ident, fi, "sha256", "single-line")
    truncated = signature.encode_fs(signature.decode_fs(good)[:-40])
    with pytest.raises(SignatureError):
        signature.verify(fi, truncated)


def test_empty_declaration_is_refused_before_signing(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "p256")
    fi = tmp_path / "FI"
    fi.write_bytes(b"")
    with pytest.raises(SignatureError, match="empty"):
        signature.fs_content_for(identity.load_identity(key), fi, "sha256", "single-line")


@pytest.mark.slow
def test_a_500_mb_declaration_is_signed_in_constant_memory(tmp_path: Path) -> None:
    import sys

    from tests.fixtures.procstat import peak_rss_mb

    key, _, ca = make_identity(tmp_path, "rsa2048")
    big = tmp_path / "FI.big"
    with big.open("wb") as f:
        f.truncate(500 << 20)  # sparse: reads as zeros, costs no disk
        f.seek((500 << 20) - 5)
        f.write(b"end\r\n")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[sender]\nnumber = "123456"\n[paths]\nroot = "spool"\n[signing]\nkey = "{key}"\n'
        '[remote]\ntransport = "local"\n'
    )
    fs = tmp_path / "FS.big"
    code, peak = peak_rss_mb(
        [sys.executable, "-m", "onss_relay.cli", "sign", str(big), "-o", str(fs), "--config", str(config)]
    )
    assert code == 0 and peak < 100, f"peak RSS {peak:.0f} MB"
    assert openssl_verifies(tmp_path, big, fs.read_bytes(), ca)


def test_verify_reports_a_certificate_expired_at_signing_time(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "p256", days=10)
    ident = identity.load_identity(key)
    fi = tmp_path / "FI"
    fi.write_bytes(b"late")
    late = ident.not_after + dt.timedelta(days=1)
    der = signature.sign_digest(ident, signature.digest_file(fi), "sha256", late)
    with pytest.raises(SignatureError, match="not valid at signing time"):
        signature.verify(fi, signature.encode_fs(der))


def asn1crypto_reference(
    identity: identity.Identity, digest: bytes, algorithm: str, now: dt.datetime, signature: bytes
) -> bytes:
    """The same SignedData built field by field with asn1crypto: what the template must reproduce byte for byte."""
    from asn1crypto import algos, cms
    from asn1crypto import x509 as ax509

    def load(c: x509.Certificate) -> ax509.Certificate:
        return ax509.Certificate.load(c.public_bytes(serialization.Encoding.DER))

    cert = load(identity.certificate)
    attrs = [
        cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": now})]}),
        cms.CMSAttribute({"type": "message_digest", "values": [digest]}),
    ]
    is_rsa = isinstance(identity.key, rsa.RSAPrivateKey)
    signer = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": cert.issuer, "serial_number": cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": algos.DigestAlgorithm({"algorithm": algorithm}),
            "signed_attrs": cms.CMSAttributes(sorted(attrs, key=lambda a: a.dump())),
            "signature_algorithm": algos.SignedDigestAlgorithm(
                {"algorithm": "rsassa_pkcs1v15" if is_rsa else f"{algorithm}_ecdsa"}
            ),
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": algorithm})],
            "encap_content_info": {"content_type": "data"},
            "certificates": [cert, *(load(c) for c in identity.chain)],
            "signer_infos": [signer],
        }
    )
    der: bytes = cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()
    return der


@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
@pytest.mark.parametrize("digest", ["sha256", "sha384", "sha512"])
def test_template_builds_the_same_bytes_as_asn1crypto(tmp_path: Path, kind: str, digest: str) -> None:
    key, _, _ = make_identity(tmp_path, kind)
    ident = identity.load_identity(key)
    _, _, ca_pem = make_identity(tmp_path, "p256")  # a second certificate, carried as a chain
    with_chain = identity.Identity(
        ident.key, ident.certificate, tuple(x509.load_pem_x509_certificates(ca_pem.read_bytes())), ident.source
    )
    for who in (ident, with_chain):
        t = signature.SignedDataTemplate(who, digest)
        content_digest = bytes(range(256))[: {"sha256": 32, "sha384": 48, "sha512": 64}[digest]]
        for now in (
            dt.datetime(2026, 11, 27, 12, 0, 1, tzinfo=dt.UTC),
            dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        ):
            der, signed_attrs, sig = t.sign(content_digest, now)
            assert der == asn1crypto_reference(who, content_digest, digest, now, sig)
            t.check(signed_attrs, sig)


def test_template_refuses_a_signature_that_does_not_match(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "p256")
    t = signature.SignedDataTemplate(identity.load_identity(key), "sha256")
    _, signed_attrs, sig = t.sign(b"\x01" * 32, dt.datetime.now(dt.UTC))
    with pytest.raises(SignatureError, match="does not match"):
        t.check(signed_attrs.replace(b"\x01" * 32, b"\x02" * 32), sig)


def test_signing_time_after_2049_is_generalized_time(tmp_path: Path) -> None:
    from asn1crypto import cms

    key, _, _ = make_identity(tmp_path, "p256")
    t = signature.SignedDataTemplate(identity.load_identity(key), "sha256")
    when = dt.datetime(2051, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    attrs = cms.CMSAttributes.load(t.signed_attributes(b"\x00" * 32, when))
    times = [a["values"][0] for a in attrs if a["type"].native == "signing_time"]
    assert times[0].name == "generalized_time" and times[0].native == when
