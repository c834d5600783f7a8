"""The signing identity of `send --once`, loaded by the parent and handed to its forked child (identity_ahead.py):
loaded once, in the parent; the child signs with it (openssl verifies); what went wrong is raised in the child as
if it had loaded it; a parent that hands nothing leaves the child to load it."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from onss_relay import identity as identity_module
from onss_relay.config import Config
from onss_relay.errors import CertificateError
from onss_relay.forked import Forked
from onss_relay.identity import Identity, load_signing_identity
from onss_relay.identity_ahead import IdentityAhead
from onss_relay.journal import Journal, open_journal_at
from onss_relay.pipeline import Relay
from tests.test_signing import make_identity, openssl_verifies
from tests.test_uploader_sftp import drop_sets


def _in_child(tmp_path: Path, ahead: IdentityAhead, load: Callable[[], Identity]) -> Forked[tuple[int, int]]:
    """Fork a child that asks ``ahead`` for the identity (``load`` when nothing is handed); it returns its pid and
    the certificate's serial number."""

    def work(journal: Journal) -> tuple[int, int]:
        got = ahead.receive(load)
        return os.getpid(), got.certificate.serial_number

    return Forked(work, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-identity")


def test_send_once_loads_the_identity_once_in_the_parent_and_the_child_signs_with_it(
    cfg: Config, relay_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = tmp_path / "loads"
    real = identity_module.load_identity

    def noted(*args: object) -> Identity:
        with loads.open("a") as f:  # the child, forked, writes here too
            f.write(f"{os.getpid()}\n")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(identity_module, "load_identity", noted)
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 31)])  # two signing batches
        report = relay.send_once(wait_for_settle=False)
        assert sorted(report.upload.sent) == sorted(gos)
    finally:
        relay.close()
    assert loads.read_text().split() == [str(os.getpid())]  # once, here: the child took it from the pipe
    assert relay.signer._identity is None  # and not kept by the uploading process
    ca = tmp_path / "signer.pem"
    ca.write_bytes(load_signing_identity(cfg).certificate.public_bytes(serialization.Encoding.PEM))
    remote = relay_dir / "remote" / "INTEST"
    fis = sorted(remote.glob("FI.*"))
    assert len(fis) == 30
    for fi in fis[:3] + fis[-3:]:
        assert openssl_verifies(tmp_path, fi, (remote / ("FS" + fi.name[2:])).read_bytes(), ca)


def test_the_child_gets_the_parents_identity_as_loaded(tmp_path: Path) -> None:
    key, _, _ = make_identity(tmp_path, "rsa2048", password=b"pw")
    loaded = identity_module.load_identity(key, None, b"pw")
    ahead = IdentityAhead()
    child = _in_child(tmp_path, ahead, lambda: pytest.fail("the child loaded the identity itself"))
    ahead.hand(lambda: loaded)
    pid, serial = child.result()
    assert pid != os.getpid() and serial == loaded.certificate.serial_number


def test_an_error_loading_it_is_raised_in_the_child_as_it_was(tmp_path: Path) -> None:
    def refused() -> Identity:
        raise CertificateError("signer.p12: the signing certificate has expired")

    ahead = IdentityAhead()
    child = _in_child(tmp_path, ahead, lambda: pytest.fail("the child loaded the identity itself"))
    ahead.hand(refused)
    with pytest.raises(CertificateError, match=r"^signer\.p12: the signing certificate has expired$"):
        child.result()


def test_an_error_that_does_not_pickle_arrives_as_its_words(tmp_path: Path) -> None:
    class Odd(Exception):
        def __init__(self, a: str, b: str) -> None:
            super().__init__(f"{a} {b}")

    def odd() -> Identity:
        raise Odd("key file", "unreadable")

    ahead = IdentityAhead()
    child = _in_child(tmp_path, ahead, lambda: pytest.fail("the child loaded the identity itself"))
    ahead.hand(odd)
    with pytest.raises(CertificateError, match="Odd: key file unreadable"):
        child.result()


class TwoWords(Exception):
    """An error that pickles (a module's class) but does not unpickle: its __init__ wants what args lacks, as
    cryptography.exceptions.InternalError(msg, err_code) does."""

    def __init__(self, a: str, b: list[int]) -> None:
        super().__init__(a)
        self.b = b


def test_an_error_that_does_not_unpickle_arrives_as_its_words(tmp_path: Path) -> None:
    """It pickled, and the child's recv() raised TypeError (missing argument), the words lost (review rev12)."""

    def internal() -> Identity:
        raise TwoWords("OpenSSL internal error", [1])

    ahead = IdentityAhead()
    child = _in_child(tmp_path, ahead, lambda: pytest.fail("the child loaded the identity itself"))
    ahead.hand(internal)
    with pytest.raises(CertificateError, match="TwoWords: OpenSSL internal error"):
        child.result()


def test_a_parent_that_hands_nothing_leaves_the_child_to_load_it(tmp_path: Path) -> None:
    """send --once found nothing to send when it forked, but a set arrived for the child: it signs it anyway."""
    key, _, _ = make_identity(tmp_path, "p256", password=b"pw")
    loaded = identity_module.load_identity(key, None, b"pw")
    ahead = IdentityAhead()
    child = _in_child(tmp_path, ahead, lambda: loaded)
    ahead.hand(None)
    assert child.result()[1] == loaded.certificate.serial_number


@pytest.mark.parametrize("copies", [200, 1500])  # ~150 KB: the pipe made larger; ~1.2 MB: above pipe-max-size
def test_a_hand_larger_than_the_pipe_never_waits_for_the_child_to_read(tmp_path: Path, copies: int) -> None:
    """A certificate file with a long chain (a CA bundle beside the certificate: 150 certificates, 250 KB) made the
    parent's write block until the child read, i.e. until its first signing batch: the connection not started
    meanwhile, and SIGTERM unheeded for the whole settle delay (review rev12). Too large for the pipe: nothing
    is handed, and the child loads the identity itself."""
    key, _, _ = make_identity(tmp_path, "rsa2048", password=b"pw")
    loaded = identity_module.load_identity(key, None, b"pw")
    big = dataclasses.replace(loaded, chain=(loaded.certificate,) * copies)
    ahead = IdentityAhead()

    def work(journal: Journal) -> tuple[int, int]:
        time.sleep(2)  # the outbox scan, the settle delay: no read from the pipe yet
        got = ahead.receive(lambda: big)
        return got.certificate.serial_number, len(got.chain)

    child = Forked(work, lambda: open_journal_at(tmp_path / "journal.sqlite"), "test-identity")
    started = time.monotonic()
    ahead.hand(lambda: big)
    assert time.monotonic() - started < 1
    assert child.result() == (loaded.certificate.serial_number, copies)
