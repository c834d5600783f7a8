"""Detached CMS signatures (the FS file): sign and verify in constant memory, encode FS layouts.

The FI is digested by streaming it; the CMS SignedData is built around that digest from a DER template
made once per identity with asn1crypto, so a file of any size is signed without being read into memory.
Binary mode: the FI bytes are never altered. Loading the key and checking the certificate: ``identity.py``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
import hashlib
import threading
from pathlib import Path

from asn1crypto import algos, cms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from onss_relay.errors import SignatureError
from onss_relay.identity import Identity, check_certificate

# asn1crypto sets each class up on its first use (field maps, OID maps), in no thread-safe way: two threads building
# or parsing at once in a new process got KeyError, ValueError or a wrong "digest mismatch" (11 of 40 processes with
# two signing threads). Everything here that builds or parses with asn1crypto holds this lock; a signature made from
# a template (byte concatenations, cryptography's calls) does not need it.
_ASN1 = threading.RLock()

LAYOUTS = ("single-line", "76-cr", "64-crlf")
_HASHES: dict[str, type[hashes.SHA1 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def digest_file(path: Path, algorithm: str = "sha256") -> bytes:
    """Given a file and a digest name, return the digest, streaming the file (constant memory)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, algorithm).digest()


def sign_file(identity: Identity, fi: Path, algorithm: str = "sha256", now: dt.datetime | None = None) -> bytes:
    """Given an Identity and an FI file, return the DER of a detached CMS SignedData over the file's bytes."""
    now = now or dt.datetime.now(dt.UTC)
    check_certificate(identity, now, warning_days=-1)
    return sign_digest(identity, digest_file(fi, algorithm), algorithm, now)


@functools.lru_cache(maxsize=64)
def _asn1_certificate(der: bytes) -> ax509.Certificate:
    return ax509.Certificate.load(der)


@functools.lru_cache(maxsize=64)
def _x509_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


def _der(tag: int, body: bytes) -> bytes:
    """Given a DER tag byte and the contents, return tag, definite length and contents."""
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


_VERSION_1 = b"\x02\x01\x01"
_SET, _SEQUENCE, _OCTET_STRING, _CONTEXT_0 = 0x31, 0x30, 0x04, 0xA0


class SignedDataTemplate:
    """The DER of a detached CMS SignedData for one identity and digest, with three holes: the content
    digest, the signing time and the signature.

    Everything else (certificates, issuer and serial, algorithm identifiers) is encoded once with asn1crypto;
    each signature is then a few byte concatenations around one private-key operation, instead of a full
    asn1crypto build (~10× slower). tests/test_signing.py checks the bytes against a build made field by
    field with asn1crypto, and against `openssl cms -verify`.
    """

    def __init__(self, identity: Identity, algorithm: str) -> None:
        if algorithm not in _HASHES:
            raise SignatureError(f"unsupported digest {algorithm!r}")
        self.identity = identity
        self.algorithm = algorithm
        self.verified = False  # set once an FS made from this template passed the full verify()
        cert = _asn1_certificate(identity.certificate.public_bytes(serialization.Encoding.DER))
        chain = [_asn1_certificate(c.public_bytes(serialization.Encoding.DER)) for c in identity.chain]
        sig_algo = "rsassa_pkcs1v15" if isinstance(identity.key, rsa.RSAPrivateKey) else f"{algorithm}_ecdsa"
        self._digest_algorithm = algos.DigestAlgorithm({"algorithm": algorithm}).dump()
        self._signature_algorithm = algos.SignedDigestAlgorithm({"algorithm": sig_algo}).dump()
        self._sid = cms.SignerIdentifier(
            {
                "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                    {"issuer": cert.issuer, "serial_number": cert.serial_number}
                )
            }
        ).dump()
        # the [0] IMPLICIT SET OF Certificate, as it sits inside SignedData
        holder = cms.SignedData(
            {
                "version": "v1",
                "digest_algorithms": [],
                "encap_content_info": {"content_type": "data"},
                "certificates": [cert, *chain],
                "signer_infos": [],
            }
        )
        self._certificates = holder["certificates"].dump()
        self._encap = holder["encap_content_info"].dump()  # no content: detached
        self._content_type_attr = cms.CMSAttribute({"type": "content_type", "values": ["data"]}).dump()
        self._signing_time_oid = cms.CMSAttributeType("signing_time").dump()
        self._message_digest_oid = cms.CMSAttributeType("message_digest").dump()
        self._signed_data_oid = cms.ContentType("signed_data").dump()

    def signed_attributes(self, digest: bytes, now: dt.datetime) -> bytes:
        """Given the content digest and the signing time, return the DER SET OF signed attributes (what is signed)."""
        when = now.astimezone(dt.UTC)
        # RFC 5652 §11.3: UTCTime for 1950–2049, GeneralizedTime after
        time_value = (
            _der(0x17, when.strftime("%y%m%d%H%M%SZ").encode())
            if when.year < 2050
            else _der(0x18, when.strftime("%Y%m%d%H%M%SZ").encode())
        )
        attrs = [
            self._content_type_attr,
            _der(_SEQUENCE, self._signing_time_oid + _der(_SET, time_value)),
            _der(_SEQUENCE, self._message_digest_oid + _der(_SET, _der(_OCTET_STRING, digest))),
        ]
        return _der(_SET, b"".join(sorted(attrs)))  # DER: a SET OF is sorted by encoding

    def assemble(self, signed_attrs: bytes, signature: bytes) -> bytes:
        """Given the signed attributes (as a SET) and their signature, return the ContentInfo DER."""
        signer = _der(
            _SEQUENCE,
            _VERSION_1
            + self._sid
            + self._digest_algorithm
            + _der(_CONTEXT_0, signed_attrs[_length_end(signed_attrs) :])  # [0] IMPLICIT
            + self._signature_algorithm
            + _der(_OCTET_STRING, signature),
        )
        signed_data = _der(
            _SEQUENCE,
            _VERSION_1 + _der(_SET, self._digest_algorithm) + self._encap + self._certificates + _der(_SET, signer),
        )
        return _der(_SEQUENCE, self._signed_data_oid + _der(_CONTEXT_0, signed_data))

    def sign(self, digest: bytes, now: dt.datetime) -> tuple[bytes, bytes, bytes]:
        """Given a content digest and the signing time, return (ContentInfo DER, signed attributes, signature)."""
        signed_attrs = self.signed_attributes(digest, now)
        signature = _sign(self.identity.key, signed_attrs, self.algorithm)
        return self.assemble(signed_attrs, signature), signed_attrs, signature

    def check(self, signed_attrs: bytes, signature: bytes) -> None:
        """Given signed attributes and a signature, raise SignatureError unless the certificate's key verifies it."""
        _verify_with(self.identity.certificate, signature, signed_attrs, self.algorithm)


def _length_end(der: bytes) -> int:
    """Given a DER encoding, return the offset where its contents start (after tag and length)."""
    return 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)


@functools.lru_cache(maxsize=16)
def template(identity: Identity, algorithm: str) -> SignedDataTemplate:
    with _ASN1:
        return SignedDataTemplate(identity, algorithm)


def sign_digest(identity: Identity, digest: bytes, algorithm: str, now: dt.datetime) -> bytes:
    """Given an Identity, a content digest and the signing time, return a detached CMS SignedData (DER)."""
    return template(identity, algorithm).sign(digest, now.replace(microsecond=0))[0]


def _sign(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, data: bytes, algorithm: str) -> bytes:
    h = _HASHES[algorithm]()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), h)
    return key.sign(data, ec.ECDSA(h))


def encode_fs(der: bytes, layout: str = "single-line") -> bytes:
    """Given a DER signature and a layout, return the FS file content (base64, no header)."""
    text = base64.b64encode(der)
    if layout == "single-line":
        return text
    width, eol = {"76-cr": (76, b"\r"), "64-crlf": (64, b"\r\n")}[layout]
    return b"".join(text[i : i + width] + eol for i in range(0, len(text), width))


def decode_fs(content: bytes) -> bytes:
    """Given an FS file's content in any layout (PEM armour tolerated), return the DER; raise SignatureError."""
    lines = [ln for ln in content.split() if not ln.startswith(b"-----")]
    try:
        der = base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the FS file is not base64 (wrong layout or not a signature file)") from None
    if not der:
        raise SignatureError("the FS file is empty")
    return der


@dataclasses.dataclass(frozen=True)
class Verified:
    subject: str
    signing_time: dt.datetime | None
    digest: str


def verify(fi: Path, fs_content: bytes) -> Verified:
    """Given an FI file and its FS content, return who signed it and when, or raise SignatureError saying why."""
    der = decode_fs(fs_content)
    with _ASN1:  # parsed lazily: every .native below may set a class up
        try:
            info = cms.ContentInfo.load(der)
            if info["content_type"].native != "signed_data":
                raise SignatureError("the FS is CMS but not SignedData")
            sd = info["content"]
            if sd["encap_content_info"]["content"].native is not None:
                raise SignatureError("the FS embeds its content; a detached signature is expected")
            signer = sd["signer_infos"][0]
            certs = [c.chosen for c in sd["certificates"]]
            algorithm = signer["digest_algorithm"]["algorithm"].native
            attrs = {a["type"].native: a["values"][0].native for a in signer["signed_attrs"]}
        except SignatureError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise SignatureError(f"the FS is not a CMS signature ({e.__class__.__name__})") from None
    if algorithm not in _HASHES:
        raise SignatureError(f"the FS uses an unsupported digest {algorithm}")
    if attrs.get("message_digest") != digest_file(fi, algorithm):  # the file read without the lock
        raise SignatureError(f"{fi.name}: the content changed since it was signed (digest mismatch)")
    with _ASN1:
        cert = _signer_certificate(signer, certs)
        _check_signature(cert, signer, algorithm)
    signing_time = attrs.get("signing_time")
    if signing_time and not (cert.not_valid_before_utc <= signing_time <= cert.not_valid_after_utc):
        raise SignatureError(
            f"the certificate was not valid at signing time {signing_time:%Y-%m-%d %H:%M} UTC "
            f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    return Verified(cert.subject.rfc4514_string(), signing_time, algorithm)


def _signer_certificate(signer: cms.SignerInfo, certs: list[ax509.Certificate]) -> x509.Certificate:
    sid = signer["sid"].chosen
    for c in certs:
        if isinstance(sid, cms.IssuerAndSerialNumber):
            if c.issuer == sid["issuer"] and c.serial_number == sid["serial_number"].native:
                return _x509_certificate(c.dump())
        elif c.key_identifier == sid.native:
            return _x509_certificate(c.dump())
    raise SignatureError("the FS does not include the signer's certificate")


def _check_signature(cert: x509.Certificate, signer: cms.SignerInfo, algorithm: str) -> None:
    _verify_with(cert, signer["signature"].native, signer["signed_attrs"].untag().dump(force=True), algorithm)


def _verify_with(cert: x509.Certificate, signature: bytes, tbs: bytes, algorithm: str) -> None:
    public = cert.public_key()
    h = _HASHES[algorithm]()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, tbs, padding.PKCS1v15(), h)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, tbs, ec.ECDSA(h))
        else:
            raise SignatureError(f"unsupported signer key type {type(public).__name__}")
    except InvalidSignature:
        raise SignatureError("the signature does not match the signer's certificate") from None


def fs_content_for(identity: Identity, fi: Path, algorithm: str, layout: str, digest: bytes | None = None) -> bytes:
    """Given an Identity and an FI (and its digest, when already computed), return the FS file content,
    checked before it is returned.

    The first FS of each identity and digest is verified in full, as a receiver would (CMS parser,
    certificate lookup, digest, signature, validity). Every FS, the first included, has its signature
    verified with the certificate's public key over the signed attributes, and its text decoded back to the
    DER that was built: the rest of the DER comes from the template the full verification accepted.
    """
    if fi.stat().st_size == 0:
        raise SignatureError(f"{fi.name}: the declaration is empty")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    check_certificate(identity, now, warning_days=-1)
    t = template(identity, algorithm)
    der, signed_attrs, signature = t.sign(digest or digest_file(fi, algorithm), now)
    content = encode_fs(der, layout)
    t.check(signed_attrs, signature)
    if decode_fs(content) != der:
        raise SignatureError(f"{fi.name}: the FS text does not decode to the signature that was made")
    if not t.verified:
        verify(fi, content)
        t.verified = True
    return content
