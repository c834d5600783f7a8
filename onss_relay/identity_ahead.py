"""The signing identity of a `send --once`, loaded by the parent while its forked child claims the first page.

Loading an RSA key checks it (OpenSSL's RSA_check_key: 60–90 ms for 2,048 bits on these machines, all of it holding
the interpreter lock), and the child needs the key only for its first signing batch, after its outbox scan and first
claimed page. The parent has nothing to do then: it loads the identity on its own core (before it connects: the
check would hold up the connection's thread as long) and hands it through a pipe the two share (the key checked,
in PKCS#8, and its certificates); the child takes the key as it comes, without checking it a second time. What
went wrong (a wrong password, an expired certificate) is handed instead and raised in the child, where loading it
would have raised it. A parent that hands nothing (nothing to send, a message the pipe cannot hold, or gone) leaves
the child to load the identity itself. The parent keeps no key once it is handed.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import pickle
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from onss_relay.errors import CertificateError
from onss_relay.forked import travels, words_of
from onss_relay.identity import Identity

Handed = tuple[str, object]  # ("identity", (key DER, certificate DER, chain DERs, source)) or ("error", exception)


class IdentityAhead:
    """A pipe from the parent of a forked child to it, for one signing identity. Make it before the fork; then the
    parent calls ``hand(load)`` and the child ``receive(load)``."""

    def __init__(self) -> None:
        self._reader, self._writer = multiprocessing.get_context("fork").Pipe(duplex=False)

    def hand(self, load: Callable[[], Identity] | None) -> None:
        """In the parent: load the identity and hand it (or why it cannot be) to the child, then close the pipe;
        None: hand nothing (the child loads it, should it need it)."""
        self._reader.close()
        with contextlib.suppress(OSError), self._writer:  # the child gone: it needs nothing any more
            if load is None:
                return
            try:
                handed: Handed = ("identity", _as_bytes(load()))
            except Exception as e:  # noqa: BLE001 - raised in the child, where loading would have raised it
                handed = ("error", e)
            if isinstance(handed[1], BaseException) and not travels(handed[1]):
                handed = ("error", CertificateError(words_of(handed[1])))
            data = pickle.dumps(handed)
            if not _fits(self._writer.fileno(), len(data) + 16):
                return  # the write would wait for the child to read (its first signing batch): it loads it itself
            self._writer.send_bytes(data)

    def receive(self, load: Callable[[], Identity]) -> Identity:
        """In the child: return the identity the parent handed, raise what it handed instead, or ``load()`` it
        when the parent handed nothing."""
        self._writer.close()
        try:
            kind, value = self._reader.recv()
        except (EOFError, OSError):
            return load()
        finally:
            self._reader.close()
        if kind == "error":
            assert isinstance(value, BaseException)
            raise value
        assert isinstance(value, tuple)
        return _from_bytes(*value)


def _fits(fd: int, size: int) -> bool:
    """Given the pipe's write end and a message's size, return whether the pipe holds it all (made larger if
    need be): a larger write waits until the child reads, at its first signing batch (a certificate file with a
    CA bundle in it: the connection not started and SIGTERM unheeded meanwhile, review rev12)."""
    try:
        capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        if capacity < size:
            with contextlib.suppress(OSError):  # above pipe-max-size, or the user's pipe pages used up
                capacity = fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except (OSError, AttributeError):  # not Linux: one page is always there
        capacity = 4096
    return bool(capacity >= size)


def _as_bytes(identity: Identity) -> tuple[bytes, bytes, list[bytes], str]:
    key = identity.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = serialization.Encoding.DER
    return (
        key,
        identity.certificate.public_bytes(der),
        [c.public_bytes(der) for c in identity.chain],
        str(identity.source),
    )


def _from_bytes(key: bytes, certificate: bytes, chain: list[bytes], source: str) -> Identity:
    # checked by the parent, which loaded it from the key file: the same key, not checked twice
    loaded = serialization.load_der_private_key(key, None, unsafe_skip_rsa_key_validation=True)
    return Identity(
        loaded,  # type: ignore[arg-type]  # an RSA or EC key: the parent loaded it as one (identity.py)
        x509.load_der_x509_certificate(certificate),
        tuple(x509.load_der_x509_certificate(c) for c in chain),
        Path(source),
    )
