"""Signatures made on the signing threads (stages/sign.py): each FS is its own part's whatever order the threads
finish in; a problem met on a thread is its set's alone; an expired certificate met there stops the stage with
nothing half-written; a forked child (send --once's signing) makes threads of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from onss_relay import identity as identity_module
from onss_relay import signature
from onss_relay.config import Config
from onss_relay.errors import CertificateError, SignatureError
from onss_relay.journal import State
from onss_relay.names import format_name, fs_name_for, parse_name
from onss_relay.pipeline import Relay
from onss_relay.process_pool import ProcessPool
from tests.helpers import forked_exit_code
from tests.test_uploader_sftp import drop_sets

REAL = signature.fs_content_for


def fs_of(fi: str) -> str:
    return format_name(fs_name_for(parse_name(fi)))


def snapshot_of(path: Path) -> str:
    """Given the snapshot a signing thread gets (work/.FI….tmp), return the FI's name."""
    return path.name[1:].split(".tmp")[0].rsplit(".", 1)[0]


def test_each_fs_is_its_own_parts_whatever_order_the_threads_finish_in(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()

    def late_first(identity, fi, algorithm, layout, digest):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        seq = int(parse_name(snapshot_of(fi)).seq)
        time.sleep(0.02 if seq % 3 == 0 else 0)  # every third set's signature finishes after later ones
        return REAL(identity, fi, algorithm, layout, digest)

    monkeypatch.setattr(signature, "fs_content_for", late_first)
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(seq, "T", 1 + seq % 3) for seq in range(1, 31)])
        relay.claim()
        assert relay.signer.sign_queued() == len(gos)
        parts = 0
        for go in gos:
            row = relay.journal.get_set(go)
            assert row is not None and row.state == State.SIGNED
            assert row.data.fs == tuple(fs_of(fi) for fi in row.parts)
            for fi in row.parts:
                copy, fs = relay.spool.work / fi, (relay.spool.work / fs_of(fi)).read_bytes()
                signature.verify(copy, fs)  # its own part's content, digest and signature
                other = relay.spool.work / row.parts[0] if fi != row.parts[0] else None
                if other is not None:
                    with pytest.raises(SignatureError):
                        signature.verify(other, fs)
                parts += 1
        assert parts == sum(1 + seq % 3 for seq in range(1, 31))
        assert threads and all(name.startswith("sign") for name in threads), threads
        assert threading.current_thread().name not in threads
    finally:
        relay.close()


def test_a_problem_met_on_a_signing_thread_is_its_sets_alone(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(seq, "T", 3 if seq == 4 else 1) for seq in range(1, 9)])
        bad = parse_name("FI" + gos[3][2:] + ".2")  # the second part of the fourth set

        def refuse_one(identity, fi, algorithm, layout, digest):  # type: ignore[no-untyped-def]
            if snapshot_of(fi) == format_name(bad):
                raise SignatureError(f"{fi.name}: a problem only this part has")
            return REAL(identity, fi, algorithm, layout, digest)

        monkeypatch.setattr(signature, "fs_content_for", refuse_one)
        relay.claim()
        assert relay.signer.sign_queued() == 7
        row = relay.journal.get_set(gos[3])
        assert row is not None and row.state == State.FAILED
        assert (row.reason or "").startswith("cannot sign") and "a problem only this part has" in (row.reason or "")
        kept = {p.name for p in cfg.paths.failed_dir.rglob("FI.*")}
        assert set(row.parts) <= kept  # its declaration kept (quarantined), not dropped
        assert not [p for p in relay.spool.work.iterdir() if gos[3][3:] in p.name]  # none of its copies or FS
        for go in gos[:3] + gos[4:]:
            signed = relay.journal.get_set(go)
            assert signed is not None and signed.state == State.SIGNED
            signature.verify(relay.spool.work / signed.parts[0], (relay.spool.work / signed.data.fs[0]).read_bytes())
    finally:
        relay.close()


def test_an_expired_certificate_met_on_a_signing_thread_stops_signing_with_nothing_written(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_check = identity_module.check_certificate

    def expires_at_the_fifth(identity, now=None, warning_days=30):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] >= 5:
            raise CertificateError("the signing certificate expired")
        return real_check(identity, now, warning_days=warning_days)

    monkeypatch.setattr(signature, "check_certificate", expires_at_the_fifth)
    relay = Relay(cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(seq, "T", 1) for seq in range(1, 11)])
        relay.claim()
        with pytest.raises(CertificateError):
            relay.signer.sign_queued()
        for go in gos:
            row = relay.journal.get_set(go)
            assert row is not None and row.state == State.QUEUED  # signed later, by a renewed certificate
        time.sleep(0.1)  # the other thread's signature, if it was still being made, has ended
        assert list(relay.spool.work.iterdir()) == []  # no copy, no FS, no temp file left
    finally:
        relay.close()


def test_a_forked_child_gets_threads_of_its_own() -> None:
    pool = ProcessPool(2, "test")
    assert pool.get().submit(os.getpid).result() == os.getpid()  # the parent's threads made, idle now
    code = forked_exit_code(
        lambda: pool.get().submit(os.getpid).result(timeout=10) == os.getpid(),
        "the forked child's work waited on threads that exist only in its parent",
    )
    assert code == 0


def test_a_child_forked_while_its_parent_made_its_pool_is_not_stuck_on_that() -> None:
    pool = ProcessPool(2, "test")
    with pool._lock:  # a thread of the parent making the pool at the instant of the fork
        code = forked_exit_code(
            lambda: pool.get().submit(os.getpid).result(timeout=10) == os.getpid(),
            "the forked child waited for ever on a lock its parent held at the fork",
        )
    assert code == 0


RACE = """
import os, sys, threading
sys.setswitchinterval(1e-6)  # threads switch as often as they can: the race shows in a few children if it exists
from pathlib import Path
from onss_relay import identity, signature
ident = identity.load_identity(Path(sys.argv[1]), None, Path(sys.argv[2]).read_text().strip().encode())
fi, fs = Path(sys.argv[3]), Path(sys.argv[4]).read_bytes()
failed = 0
for _ in range(int(sys.argv[5])):
    pid = os.fork()  # asn1crypto has set up no class in this process yet: each child starts from that
    if pid == 0:
        errors, start = [], threading.Barrier(4)
        def one(i):
            start.wait()
            try:
                if i % 2:
                    signature.fs_content_for(ident, fi, "sha256", "single-line")  # the template, the full check
                else:
                    signature.verify(fi, fs)
            except Exception as e:
                errors.append(e)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        os._exit(1 if errors else 0)
    failed += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0
print(failed)
"""


def test_signatures_made_and_checked_on_threads_at_once_in_a_new_process(identity_dir: Path, tmp_path: Path) -> None:
    """asn1crypto sets its classes up on first use in no thread-safe way: two signing threads of a new process
    (send --once's child) building the template and checking the first FS at once got KeyError, ValueError or a
    false "digest mismatch" (an unexpected error, exit 1)."""
    fi = tmp_path / "fi"
    fi.write_bytes(b"<DmfA>x</DmfA>\r\n")
    key, password = identity_dir / "signer.p12", identity_dir / "signer.pass"
    ident = identity_module.load_identity(key, None, password.read_text().strip().encode())
    fs = tmp_path / "fs"
    fs.write_bytes(REAL(ident, fi, "sha256", "single-line"))
    script = tmp_path / "race.py"
    script.write_text(RACE)
    run = subprocess.run(
        [sys.executable, str(script), str(key), str(password), str(fi), str(fs), "60"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "0", f"{run.stdout.strip()} of 60 processes failed to sign or check on two threads"
