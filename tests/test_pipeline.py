"""The stages end to end over the local transport and the simulator: happy path, every quarantine, recovery."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from onss_relay import identity, signature
from onss_relay.config import Config, load_config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.simulator import Simulator
from onss_relay.stages.claim import Claimer
from onss_relay.stages.upload import UploadReport, _Worker
from onss_relay.stages.upload_queue import Gates, Round, SentBatch, WorkQueue
from onss_relay.transport.local import LocalTransport
from tests.conftest import SENDER, SIGNING_PASSWORD, fi_name, write_config


def drop(relay: Relay, name: str, content: bytes = b"<DmfA>\r\n</DmfA>\r\n") -> Path:
    p = relay.spool.outbox / name
    p.write_bytes(content)
    return p


def cycle(relay: Relay, home: Path) -> None:
    relay.send_once(wait_for_settle=False)
    Simulator(home, SENDER).process()
    relay.poll_once()


@pytest.fixture
def relay(cfg: Config):  # type: ignore[no-untyped-def]
    r = Relay(cfg)
    yield r
    r.close()


def reasons(relay: Relay) -> dict[str, dict[str, str]]:
    return {
        p.name.removesuffix(".reason.json"): json.loads(p.read_text()) for p in relay.spool.failed.glob("*.reason.json")
    }


def test_full_cycle(relay: Relay, relay_dir: Path) -> None:
    drop(relay, fi_name(1))
    for part in (1, 2, 3):
        drop(relay, fi_name(2, total=3, part=part))
    drop(relay, fi_name(3, env="S"))
    cycle(relay, relay_dir / "remote")
    rows = {r.go_name: r for r in relay.journal.recent_sets()}
    assert {r.state for r in rows.values()} == {State.NOTIFIED}
    assert list(relay.spool.outbox.iterdir()) == []
    sent = sorted(p.name for p in relay.spool.sent.rglob("*") if p.is_file())
    assert len(sent) == 5 + 5 + 3  # FI and FS per part (S included: every send carries its FS), one GO per set
    assert any(n.startswith("FS.") and ".S." in n for n in sent)
    for folder in ("OUT", "OUTTEST", "OUTTEST-S"):
        assert list((relay_dir / "remote" / folder).iterdir()) == []  # deleted after mirroring
    assert len(list((relay.spool.inbox / "OUTTEST").iterdir())) == 12  # 2 sets × (ACRF + NOTI) × 3 files
    for go, row in rows.items():
        doc = json.loads((relay.spool.results / f"{go}.json").read_text())
        assert doc["state"] == "notified" and doc["ticket"] == row.ticket and doc["acrf"]["accepted"]


def test_refused_set_explains_the_code(relay: Relay, relay_dir: Path) -> None:
    drop(relay, fi_name(1))
    relay.send_once(wait_for_settle=False)
    (relay_dir / "remote" / "INTEST" / fi_name(1)).write_bytes(b"tampered on the way")
    Simulator(relay_dir / "remote", SENDER).process()
    relay.poll_once()
    [row] = relay.journal.recent_sets()
    assert row.state == State.REFUSED
    assert row.data.acrf is not None and [(e.code, e.description) for e in row.data.acrf.errors] == [
        ("ACRF-125", "invalid signature")
    ]


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("notes.txt", b"hello", "not a valid declaration file name"),
        (fi_name(1, sender="654321"), b"x", "wrong sender number"),
        (fi_name(1, date="29990101"), b"x", "date in the future"),
        (fi_name(1, app="ACRF"), b"x", "not a code senders send"),
        (fi_name(1), b"", "cannot sign"),
        ("FO.ACRF.999999.20260101.00001.T", b"x", "not a declaration file"),
    ],
)
def test_bad_input_is_quarantined_with_a_reason(relay: Relay, name: str, content: bytes, reason: str) -> None:
    drop(relay, name, content)
    report = relay.send_once(wait_for_settle=False)
    assert report.quarantined == 1
    kept = relay.spool.failed / name
    assert kept.read_bytes() == content
    why = reasons(relay)[name]
    assert why["reason"].startswith(reason) and why["detail"] and why["at"]
    assert not (relay.spool.outbox / name).exists()


def test_environment_not_allowed(relay_dir: Path) -> None:
    write_config(relay_dir, '[watch]\nsettle = "0s"\nenvironments = ["T"]\n'.replace('[watch]\nsettle = "0s"\n', ""))
    cfg = load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__WATCH__ENVIRONMENTS": '["T"]'})
    r = Relay(cfg)
    drop(r, fi_name(1, env="R"))
    r.send_once(wait_for_settle=False)
    assert reasons(r)[fi_name(1, env="R")]["reason"] == "environment not allowed"


def test_duplicate_name_is_refused_locally(relay: Relay, relay_dir: Path) -> None:
    drop(relay, fi_name(1))
    relay.send_once(wait_for_settle=False)
    drop(relay, fi_name(1), b"second time")
    relay.send_once(wait_for_settle=False)
    assert reasons(relay)[fi_name(1)]["reason"] == "duplicate name, would be ACRF-133"
    assert (relay.spool.failed / fi_name(1)).read_bytes() == b"second time"


def test_incomplete_set_waits_then_is_quarantined(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "1h"})
    r = Relay(cfg)
    part = drop(r, fi_name(1, total=3, part=1))
    drop(r, fi_name(1, total=3, part=3))
    now = [1000.0]
    claimer = Claimer(cfg, r.journal, r.spool, clock=lambda: now[0])
    claimer.scan()
    assert part.exists() and not reasons(r)  # still waiting
    now[0] += 3601  # an hour after the relay first saw them (their mtimes do not count: `mv` keeps old ones)
    claimer.scan()
    why = reasons(r)
    assert set(why) == {fi_name(1, total=3, part=1), fi_name(1, total=3, part=3)}
    assert fi_name(1, total=3, part=2) in why[fi_name(1, total=3, part=1)]["detail"]


def test_premade_signature_is_used_or_quarantined(relay: Relay, relay_dir: Path, identity_dir: Path) -> None:
    ident = identity.load_identity(identity_dir / "signer.p12", None, SIGNING_PASSWORD.encode())
    good = drop(relay, fi_name(1))
    premade = signature.fs_content_for(ident, good, "sha256", "64-crlf")
    drop(relay, "FS" + fi_name(1)[2:], premade)
    bad = drop(relay, fi_name(2), b"<DmfA>other content</DmfA>")
    drop(relay, "FS" + fi_name(2)[2:], signature.fs_content_for(ident, good, "sha256", "single-line"))
    relay.send_once(wait_for_settle=False)
    assert (relay_dir / "remote" / "INTEST" / ("FS" + fi_name(1)[2:])).read_bytes() == premade
    assert "does not verify" in reasons(relay)[fi_name(2)]["detail"]
    assert (relay.spool.failed / ("FS" + fi_name(2)[2:])).exists() and not bad.exists()


def test_environment_s_is_signed_by_default_and_the_switch_turns_it_off(relay: Relay, relay_dir: Path) -> None:
    # the ONSS documents: every send carries its signature, in every environment; the simulator refuses
    # a set without FS in INTEST-S as in every folder
    drop(relay, fi_name(1, env="S"))
    cycle(relay, relay_dir / "remote")
    [row] = relay.journal.recent_sets()
    assert row.state == State.NOTIFIED and row.data.fs == ("FS" + fi_name(1, env="S")[2:],)
    cfg = load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__SIGNING__SIGN_IN_S": "false"})
    r = Relay(cfg)
    try:
        drop(r, fi_name(2, env="S"))
        cycle(r, relay_dir / "remote")
        refused = r.journal.get_set("GO" + fi_name(2, env="S")[2:].rsplit(".", 1)[0])
        assert refused is not None and refused.state == State.REFUSED and refused.data.fs == ()
        assert refused.data.acrf is not None and [e.code for e in refused.data.acrf.errors] == ["ACRF-122"]
    finally:
        r.close()


def _to_go_sending(relay: Relay) -> str:
    """Claim, sign and upload FI+FS of one set by hand, stopping where a crash before the GO would."""
    drop(relay, fi_name(1))
    relay.claim()
    relay.signer.sign_queued()
    [row] = relay.journal.sets_in(State.SIGNED)
    t = LocalTransport(relay.spool.paths.root.parent / "remote")
    worker = _Worker(relay.uploader, Round(WorkQueue(relay.journal), UploadReport(), None))
    upload = worker._upload_for(row, SentBatch(relay.journal, relay.spool, worker._sent), Gates(relay.journal))
    last = len(upload.steps) - 1  # the GO's
    for step in range(last):
        assert upload.enter(step)
        upload.commit()
        for f in upload.files(step):
            with f.open() as src:
                t.put(src, f.folder, f.name)
    assert upload.enter(last)
    upload.commit()  # go_sending committed; the process dies before the GO put
    assert relay.journal.get_set(row.go_name).state == State.GO_SENDING  # type: ignore[union-attr]
    return row.go_name


def test_crash_in_go_sending_puts_the_go_once(relay: Relay, relay_dir: Path) -> None:
    go = _to_go_sending(relay)
    assert not (relay_dir / "remote" / "INTEST" / go).exists()
    relay.uploader.upload_pending()
    assert (relay_dir / "remote" / "INTEST" / go).exists()
    assert relay.journal.history(go)[-1][2] == "GO uploaded"


def test_crash_in_go_sending_after_go_landed(relay: Relay, relay_dir: Path) -> None:
    go = _to_go_sending(relay)
    (relay_dir / "remote" / "INTEST" / go).write_bytes(b"")
    mtime = (relay_dir / "remote" / "INTEST" / go).stat().st_mtime_ns
    relay.uploader.upload_pending()
    assert (relay_dir / "remote" / "INTEST" / go).stat().st_mtime_ns == mtime
    assert relay.journal.history(go)[-1][2] == "GO already on the server"


def test_crash_in_go_sending_after_consumption(relay: Relay, relay_dir: Path) -> None:
    go = _to_go_sending(relay)
    for p in (relay_dir / "remote" / "INTEST").iterdir():
        p.unlink()  # the transfer point took the set (so the GO had landed)
    relay.uploader.upload_pending()
    assert list((relay_dir / "remote" / "INTEST").iterdir()) == []
    assert relay.journal.get_set(go).state == State.SENT  # type: ignore[union-attr]


def test_poller_refuses_hostile_names_and_keeps_different_bytes(relay: Relay, relay_dir: Path) -> None:
    out = relay_dir / "remote" / "OUTTEST"
    (out / "..evil").write_bytes(b"x")
    (out / "FO.ACRF.999999.20260101.00001.T\x01").write_bytes(b"x")
    (out / "FI.DMFA.999999.20260101.00001.T.1.1").write_bytes(b"x")
    (out / "FO.NOTI.999999.20260101.00002.T").mkdir()
    os.symlink("/etc/passwd", out / "FO.NOTI.999999.20260101.00003.T")
    (relay.spool.inbox / "OUTTEST" / "FO.NOTI.999999.20260101.00004.T").write_bytes(b"older copy")
    (out / "FO.NOTI.999999.20260101.00004.T").write_bytes(b"<NOTIFICATION/>")
    (out / "GO.NOTI.999999.20260101.00004.T").write_bytes(b"")
    report = relay.poll_once()
    assert len(report.suspicious) == 5
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "..evil",
            "FO.ACRF.999999.20260101.00001.T\x01",
            "FI.DMFA.999999.20260101.00001.T.1.1",
            "FO.NOTI.999999.20260101.00002.T",
            "FO.NOTI.999999.20260101.00003.T",
        ]
    )
    inbox = relay.spool.inbox / "OUTTEST"
    assert (inbox / "FO.NOTI.999999.20260101.00004.T").read_bytes() == b"older copy"
    assert (inbox / "FO.NOTI.999999.20260101.00004.T.1").read_bytes() == b"<NOTIFICATION/>"
    assert not any(relay.spool.paths.root.parent.rglob("evil"))


def test_no_go_file_is_taken_once_its_size_is_stable(relay: Relay, relay_dir: Path) -> None:
    out = relay_dir / "remote" / "OUT"
    (out / "FO.DMNO.999999.20260101.00001.R.1.1").write_bytes(b"<x/>")
    assert relay.poll_once().mirrored == []
    assert [m.split("/")[1] for m in relay.poll_once().mirrored] == ["FO.DMNO.999999.20260101.00001.R.1.1"]
    assert not (out / "FO.DMNO.999999.20260101.00001.R.1.1").exists()


def test_already_mirrored_response_is_not_downloaded_again(relay: Relay, relay_dir: Path) -> None:
    out = relay_dir / "remote" / "OUTTEST"
    (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<ACRF/>")
    (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
    cfg_keep = load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__POLL__DELETE_REMOTE": "false"})
    keeper = Relay(cfg_keep)
    assert len(keeper.poll_once().mirrored) == 2  # mirrored, then "crash" before the remote delete
    keeper.close()
    # same size: the listing says nothing more, the copy held is taken for it (another size is a new file of
    # that name and is fetched: tests/test_poll_reused.py)
    (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<XXXX/>")
    report = relay.poll_once()
    assert report.mirrored == [] and len(report.deleted) == 2
    assert (relay.spool.inbox / "OUTTEST" / "FO.ACRF.999999.20260101.00001.T").read_bytes() == b"<ACRF/>"


def test_size_cap_leaves_the_file_on_the_server(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={"ONSS_RELAY__POLL__MAX_SIZE": "10"})
    r = Relay(cfg)
    out = relay_dir / "remote" / "OUTTEST"
    (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"x" * 11)
    (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
    report = r.poll_once()
    assert report.too_large == ["OUTTEST/FO.ACRF.999999.20260101.00001.T"]
    assert (out / "FO.ACRF.999999.20260101.00001.T").exists()
    assert not (r.spool.inbox / "OUTTEST" / "FO.ACRF.999999.20260101.00001.T").exists()
    assert not list((r.spool.inbox / "OUTTEST").glob(".*"))


def test_malformed_response_is_kept_and_reported(relay: Relay, relay_dir: Path) -> None:
    out = relay_dir / "remote" / "OUTTEST"
    (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<ACRF><unclosed>")
    (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
    relay.poll_once()
    resp = relay.journal.get_response("OUTTEST", "FO.ACRF.999999.20260101.00001.T")
    assert resp is not None and resp.kind == "malformed" and Path(resp.local_path).exists()


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from onss_relay.names import format_name  # noqa: E402
from onss_relay.stages.poll import validate_remote_entry  # noqa: E402
from onss_relay.transport.base import RemoteEntry  # noqa: E402

HOSTILE_PARTS = st.sampled_from(
    [
        "..",
        "/",
        "\\",
        "\x00",
        "\n",
        "\x1b",
        "Ｆ",
        "ﬁ",
        "FO",
        "ACRF",
        "999999",
        "20260101",
        "00001",
        "T",
        ".",
        "A" * 300,
        "%2e%2e",
    ]
)


@given(
    st.one_of(
        st.text(max_size=400),
        st.just("FO.ACRF." + "9" * 10_000),
        st.lists(HOSTILE_PARTS, max_size=12).map("".join),
        st.lists(HOSTILE_PARTS, max_size=8).map(".".join),
    )
)
def test_hostile_remote_names_never_pass_as_responses(name: str) -> None:
    verdict = validate_remote_entry(RemoteEntry(name, 1, "file"))
    if isinstance(verdict, str):
        return
    assert format_name(verdict) == name and len(name.encode()) <= 255
    assert "/" not in name and ".." not in name and name.isascii() and name.isprintable()


def test_a_declaration_rewritten_after_signing_is_not_sent(relay: Relay, relay_dir: Path) -> None:
    fi = drop(relay, fi_name(1), b"<first-version/>")
    relay.claim()
    relay.signer.sign_queued()
    fi.write_bytes(b"<other-version!>")  # same size, new content
    os.utime(fi, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    relay.uploader.upload_pending()
    assert reasons(relay)[fi_name(1)]["reason"] == "declaration changed after it was claimed"
    assert not (relay_dir / "remote" / "INTEST" / fi_name(1)).exists()


def test_a_reused_response_name_with_new_content_is_downloaded_not_deleted_unseen(
    relay: Relay, relay_dir: Path
) -> None:
    out = relay_dir / "remote" / "OUTTEST"
    (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<ACRF/>")
    (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
    relay.poll_once()
    (out / "FO.ACRF.999999.20260101.00001.T").write_bytes(b"<ACRF>second</ACRF>")
    (out / "GO.ACRF.999999.20260101.00001.T").write_bytes(b"")
    relay.poll_once()
    inbox = relay.spool.inbox / "OUTTEST"
    assert (inbox / "FO.ACRF.999999.20260101.00001.T").read_bytes() == b"<ACRF/>"
    assert (inbox / "FO.ACRF.999999.20260101.00001.T.1").read_bytes() == b"<ACRF>second</ACRF>"


def test_a_file_dated_today_in_brussels_is_not_in_the_future() -> None:
    import datetime as dt

    from onss_relay.stages.claim import latest_plausible_today

    assert latest_plausible_today() >= dt.date.today()
    assert latest_plausible_today() >= (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).date()


def test_a_lease_lapsed_during_an_fi_put_stops_its_fs_on_a_one_file_at_a_time_transport(
    relay: Relay, relay_dir: Path
) -> None:
    """FTP and local put a step's files one after the other: with FI and FS in one step, a relay whose lease lapsed
    while its (large, slow) FI went up must still check before its FS is opened, as it did when FS was its own
    step; otherwise a newer leader that has since sent the set whole may have its FS truncated under its GO."""
    from onss_relay.errors import Fenced

    drop(relay, fi_name(1))
    fi = fi_name(1)
    landed = relay_dir / "remote" / "INTEST" / fi

    def lease() -> None:
        if landed.exists():  # the FI is on the server: the lease lapsed while it went up
            raise Fenced("postgresql://…: its lease was not renewed in time")

    relay.uploader.before_put = lease
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == []
    assert landed.exists()
    assert not (relay_dir / "remote" / "INTEST" / ("FS" + fi[2:])).exists()
