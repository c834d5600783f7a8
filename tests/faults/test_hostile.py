"""Hostile input, generated: names and contents in the outbox and on the server. The relay refuses each with a
clear reason, keeps it (outbox side) or leaves it (server side), and keeps running."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onss_relay import identity, signature
from onss_relay.config import load_config
from onss_relay.pipeline import Relay
from onss_relay.spool import is_temp_name
from onss_relay.transport.local import make_remote_home
from tests.conftest import SIGNING_PASSWORD, TODAY, write_config

pytestmark = pytest.mark.slow

GOOD = f"FI.DMFA.123456.{TODAY}.00001.T.1.1"
PIECES = st.sampled_from(
    [
        "..",
        ".",
        "FI",
        "FS",
        "GO",
        "FO",
        "DMFA",
        "123456",
        TODAY,
        "00001",
        "00000",
        "T",
        "R",
        "1",
        "9",
        "\t",
        "\n",
        "\x1b[31m",
        " ",
        "%2F",
        "Ｆ",
        "Ι",
        "ﬁ",
        "\u202e",
        "é",
        "~",
        "-",
        "*",
    ]
)
NAMES = st.one_of(
    st.lists(PIECES, min_size=1, max_size=14).map("".join),
    st.lists(PIECES, min_size=1, max_size=9).map(".".join),
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=60),
    st.integers(0, len(GOOD) - 1).map(lambda i: GOOD[:i] + "\x01" + GOOD[i + 1 :]),
).filter(lambda n: n not in (".", "..") and len(n.encode()) <= 255)
CONTENTS = st.sampled_from(
    [
        b"",
        b"\x00" * 1000,
        b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;'>]><x>&b;</x>",
        b"<unclosed>",
        "<é>\u202e</é>".encode(),
        os.urandom(300),
        b"-----BEGIN PKCS7-----\nMIIB\n",
    ]
)


class World:
    """One relay folder shared by all examples (hypothesis runs many in one test)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="onss-hostile-"))
        identity.self_signed_identity(self.dir / "keys", "hostile", password=SIGNING_PASSWORD.encode())
        (self.dir / "keys" / "signer.pass").write_text(SIGNING_PASSWORD)
        make_remote_home(self.dir / "remote")
        write_config(self.dir)
        self.relay = Relay(load_config(self.dir / "config.toml", environ={}))

    def close(self) -> None:
        self.relay.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def reason_for(relay: Relay, name: str) -> dict[str, str] | None:
    for p in relay.spool.failed.glob("*.reason.json"):
        doc = json.loads(p.read_text())
        if doc["file"] == name:
            return doc
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, content=CONTENTS)
def test_hostile_outbox_files_are_kept_with_a_reason(name: str, content: bytes) -> None:
    w = World()
    try:
        path = w.relay.spool.outbox / name
        try:
            path.write_bytes(content)
        except OSError:
            return  # a name this filesystem cannot hold never reaches us
        w.relay.send_once(wait_for_settle=False)
        if is_temp_name(name):  # names writers use while writing are never touched (DESIGN.md)
            assert path.read_bytes() == content
            return
        quarantined = w.relay.spool.failed / name
        sent = [p for p in w.relay.spool.sent.rglob("*") if p.name == name]
        assert quarantined.exists() or sent, f"{name!r} vanished"
        if quarantined.exists():
            assert quarantined.read_bytes() == content
            why = reason_for(w.relay, name)
            assert why and why["reason"] and why["detail"]
        else:
            assert content  # only a non-empty declaration with a valid name may be sent
    finally:
        w.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, content=CONTENTS)
def test_hostile_server_files_never_escape_the_inbox(name: str, content: bytes) -> None:
    w = World()
    try:
        out = w.dir / "remote" / "OUTTEST"
        try:
            (out / name).write_bytes(content)
        except OSError:
            return
        first = w.relay.poll_once()
        second = w.relay.poll_once()  # a file without GO is taken when its size held across two polls
        suspicious = first.suspicious + second.suspicious
        outside = [
            p
            for p in w.dir.rglob("*")
            if p.is_file()
            and w.relay.spool.paths.root not in p.parents
            and w.dir / "remote" not in p.parents
            and w.dir / "keys" not in p.parents
            and p.name != "config.toml"
        ]
        assert outside == []
        if (out / name).exists():
            assert f"OUTTEST/{name!r}" in suspicious  # left alone, and said so
        else:
            assert (w.relay.spool.inbox / "OUTTEST" / name).read_bytes() == content
    finally:
        w.close()


def test_truncated_premade_signature_quarantines_the_set(tmp_path: Path) -> None:
    w = World()
    try:
        fi = w.relay.spool.outbox / GOOD
        fi.write_bytes(b"<DmfA/>")
        ident = identity.load_identity(w.dir / "keys" / "signer.p12", None, SIGNING_PASSWORD.encode())
        good = signature.fs_content_for(ident, fi, "sha256", "single-line")
        (w.relay.spool.outbox / ("FS" + GOOD[2:])).write_bytes(good[: len(good) // 2])
        w.relay.send_once(wait_for_settle=False)
        why = reason_for(w.relay, GOOD)
        assert why and "does not verify" in why["detail"]
    finally:
        w.close()


def test_a_huge_declaration_goes_through_and_a_huge_response_is_capped(tmp_path: Path) -> None:
    w = World()
    try:
        big = w.relay.spool.outbox / GOOD
        with big.open("wb") as f:
            f.truncate(300 << 20)
        w.relay.send_once(wait_for_settle=False)
        assert (w.dir / "remote" / "INTEST" / GOOD).stat().st_size == 300 << 20
        capped = Relay(load_config(w.dir / "config.toml", environ={"ONSS_RELAY__POLL__MAX_SIZE": str(10 << 20)}))
        out = w.dir / "remote" / "OUTTEST"
        with (out / "FO.DMNO.999999.20261124.00001.T").open("wb") as f:
            f.truncate(50 << 20)
        (out / "GO.DMNO.999999.20261124.00001.T").write_bytes(b"")
        report = capped.poll_once()
        assert report.too_large == ["OUTTEST/FO.DMNO.999999.20261124.00001.T"]
        assert (out / "FO.DMNO.999999.20261124.00001.T").exists()
        capped.close()
    finally:
        w.close()
