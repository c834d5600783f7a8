"""Uncertain sets (stages/uncertain.py): a connection given up with a set's request unanswered leaves the set
untouched for remote.quiet_period, whatever the transport, and then it is finished from what the server holds.

The sequential path (FTP, and the GO recovery on SFTP) over the in-memory transport made to deliver late; the
abortive close against a real sshd; the quiet period's clock. The whole daemon against a proxy that holds
packets is in tests/faults/test_stalled_paths.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import pytest

from onss_relay.commands.status import result_summary
from onss_relay.config import Config, Duration
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.stages import uncertain
from onss_relay.stages.unclean_stop import MARKER_NAME, InFlightMarker
from onss_relay.stages.upload import FILES
from onss_relay.transport.sftp import SftpTransport
from tests.conftest import fi_name
from tests.fake_transport import FakeTransport
from tests.fixtures.holdproxy import HoldProxy
from tests.fixtures.sshd import SshServer
from tests.helpers import wait_until
from tests.test_stages_fake import Remote, drop, writes

QUIET = 0.6


class LateRemote(Remote):
    """The remote home over connections whose failed requests may still arrive (as over a network)."""

    def connect(self) -> FakeTransport:
        t = super().connect()
        t.delivers_late = True
        return t


@pytest.fixture
def late(cfg: Config):  # type: ignore[no-untyped-def]
    r = LateRemote()
    short = dataclasses.replace(cfg, remote=dataclasses.replace(cfg.remote, quiet_period=Duration(QUIET)))
    r.relay = Relay(short, connect=r.connect, max_attempts=5)
    r.relay.uploader.max_wait = 0.01
    yield r
    r.relay.close()


def test_a_put_without_answer_leaves_its_set_alone_for_the_quiet_period_then_sends_it_whole(late: LateRemote) -> None:
    relay = late.relay
    assert relay is not None
    gos = drop(relay, 3)
    fs = "FS" + fi_name(1, "T", 2, 1)[2:]
    late.faults.add(("put", fs))  # no answer: the connection is given up with this FS in flight
    report = relay.send_once(wait_for_settle=False)
    assert sorted(report.upload.sent) == sorted(gos[1:])  # the others went on
    assert len(report.upload.waiting) == 1 and gos[0] in report.upload.waiting[0]
    row = relay.journal.get_set(gos[0])
    assert row is not None and row.state == State.UPLOADING and row.data.uncertain is not None
    assert row.data.uncertain.step == FILES  # its FI and FS are one step
    assert writes(late, gos[0]) == [] and len(writes(late, row.parts[0])) == 1  # nothing more of it was put
    late.files[("INTEST", fs)] = b"half"  # the held request lands during the quiet period
    time.sleep(QUIET)
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [gos[0]] and report.upload.waiting == []
    row = relay.journal.get_set(gos[0])
    assert row is not None and row.state == State.SENT and row.data.uncertain is None
    assert late.files[("INTEST", fs)] == next(relay.spool.sent.rglob(fs)).read_bytes()  # whole again
    assert len(writes(late, fs)) == 1 and len(writes(late, gos[0])) == 1
    assert max(writes(late, fs)) < writes(late, gos[0])[0]


def test_status_shows_one_fixed_moment_even_past_it_and_after_a_longer_period_is_set(late: LateRemote) -> None:
    """status once showed a moment that moved with every call after the quiet period ended, and the recorded
    period when a longer one had been configured (send --once and status then named two moments)."""
    from onss_relay.results import uncertain_document

    relay = late.relay
    assert relay is not None
    gos = drop(relay, 1)
    late.faults.add(("put", gos[0]))
    relay.send_once(wait_for_settle=False)
    row = relay.journal.get_set(gos[0])
    assert row is not None and row.data.uncertain is not None
    first = uncertain_document(row)
    assert first is not None and not first["due"]
    time.sleep(QUIET + 0.2)
    past = [uncertain_document(row) for _ in range(2)]
    assert past[0] == past[1] and past[0] is not None and past[0]["due"]  # fixed, and due at the next round
    longer = dataclasses.replace(relay.cfg.remote, quiet_period=Duration(3600))
    relay.uploader.cfg = dataclasses.replace(relay.uploader.cfg, remote=longer)
    relay.uploader.upload_pending()
    row = relay.journal.get_set(gos[0])
    assert row is not None and row.data.uncertain is not None and row.data.uncertain.quiet == 3600
    doc = uncertain_document(row)
    assert doc is not None and not doc["due"]
    deadline = dt.datetime.fromisoformat(doc["decided_after"]).timestamp()
    assert abs(deadline - (row.data.uncertain.since + 3600)) < 5  # the moment the uploader keeps


def test_a_go_without_answer_is_put_at_most_once(late: LateRemote) -> None:
    relay = late.relay
    assert relay is not None
    [go] = drop(relay, 1)
    late.faults.add(("put", go))
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [] and len(report.upload.waiting) == 1
    row = relay.journal.get_set(go)
    assert row is not None and row.state == State.GO_SENDING and row.data.uncertain is not None
    assert row.data.uncertain.step == "GO"
    late.files[("INTEST", go)] = b""  # the GO held by the path lands after all
    time.sleep(QUIET)
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [go]
    assert [op for op, n in late.events if n == go] == ["failed-put"]  # never put a second time
    assert "GO already on the server" in str(relay.journal.history(go))


def test_an_error_the_server_answered_leaves_nothing_uncertain(late: LateRemote) -> None:
    """A refusal or a 421 is the request's answer: nothing of it is on its way, the set is retried at once."""
    relay = late.relay
    assert relay is not None
    [go] = drop(relay, 1)
    original = FakeTransport.put_bytes

    def refused_once(self: FakeTransport, data: bytes, folder: str, name: str) -> None:
        if name == go and not any(n == go for _, n in late.events):
            late.events.append(("refused-put", name))
            from onss_relay.errors import TransientRemoteError

            raise TransientRemoteError("421 service not available").as_answer()
        original(self, data, folder, name)

    FakeTransport.put_bytes = refused_once  # type: ignore[method-assign]
    try:
        report = relay.send_once(wait_for_settle=False)
    finally:
        FakeTransport.put_bytes = original  # type: ignore[method-assign]
    assert report.upload.sent == [go] and report.upload.waiting == []


def _left_by_a_killed_process(late: LateRemote) -> list[str]:
    """Two signed sets as a process killed mid-upload leaves them: one in uploading, one in go_sending (its FI on
    the server), none recorded uncertain, and the spool's in-flight marker there."""
    relay = late.relay
    assert relay is not None
    gos = drop(relay, 2)
    relay.claim()
    relay.signer.sign_queued()
    relay.journal.transition(gos[0], State.UPLOADING)
    relay.journal.transition(gos[1], State.UPLOADING)
    relay.journal.transition(gos[1], State.GO_SENDING)
    row = relay.journal.get_set(gos[1])
    assert row is not None
    for name in (*row.parts, *row.data.fs):
        late.files[("INTEST", name)] = b"as put before the kill"
    return gos


def test_after_an_unclean_stop_the_sets_being_uploaded_wait_the_quiet_period(cfg: Config, late: LateRemote) -> None:
    """The marker left by a killed process: its sets in uploading and go_sending are uncertain from the start of
    the next one (step: their state), nothing of them is put before the quiet period, then each is finished."""
    relay = late.relay
    assert relay is not None
    gos = _left_by_a_killed_process(late)
    InFlightMarker(cfg.paths.root).set()
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [] and len(report.upload.waiting) == 2, report.upload
    assert all("when the relay stopped uncleanly" in w for w in report.upload.waiting), report.upload.waiting
    steps = {go: relay.journal.get_set(go).data.uncertain.step for go in gos}  # type: ignore[union-attr]
    assert steps == {gos[0]: "uploading", gos[1]: "go_sending"}
    shown = result_summary(relay.journal.get_set(gos[1]))  # type: ignore[arg-type]
    assert shown.startswith("uncertain: it was go_sending when the relay stopped uncleanly"), shown
    assert late.events == [] or all(op != "put" for op, _ in late.events)
    assert not (cfg.paths.root / MARKER_NAME).exists()  # cleared by the round that followed
    time.sleep(QUIET)
    report = relay.send_once(wait_for_settle=False)
    assert sorted(report.upload.sent) == sorted(gos) and report.upload.waiting == []
    assert len(writes(late, gos[0])) == 1 and len(writes(late, gos[1])) == 1


def test_a_clean_stop_leaves_no_marker_and_the_next_start_no_wait(cfg: Config, late: LateRemote) -> None:
    """A round that ends cleanly removes the marker, even with a set recorded uncertain by a connection given up:
    the next process does not start that set's quiet period over, and a set left in uploading is sent at once."""
    relay = late.relay
    assert relay is not None
    gos = _left_by_a_killed_process(late)  # no marker: as after a clean stop
    late.faults.add(("put", gos[1]))
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [gos[0]] and len(report.upload.waiting) == 1  # its GO unanswered: uncertain
    assert not (cfg.paths.root / MARKER_NAME).exists()
    relay.close()
    time.sleep(QUIET)
    late.relay = relay = Relay(relay.cfg, connect=late.connect, max_attempts=5)  # the next process
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [gos[1]] and report.upload.waiting == []


def test_the_quiet_period_is_counted_on_the_boot_clock_and_never_shortened() -> None:
    u = uncertain.new_uncertainty("GO", 100.0)
    assert 99 < uncertain.quiet_left(u, 100.0) <= 100
    assert 199 < uncertain.quiet_left(u, 200.0) <= 200  # a longer period configured since applies
    earlier = dataclasses.replace(u, boottime=u.boottime - 60, since=u.since - 60)
    assert 39 < uncertain.quiet_left(earlier, 100.0) <= 40
    stepped = dataclasses.replace(u, since=u.since - 3600)  # the wall clock jumped: the boot clock did not
    assert uncertain.quiet_left(stepped, 100.0) > 99
    rebooted = dataclasses.replace(earlier, boot_id="another boot")  # time since unknown: all of it again
    assert uncertain.quiet_left(rebooted, 100.0) == 100


def test_a_connection_given_up_is_reset(sftp_cfg: Config, sshd: SshServer) -> None:
    """abort() resets (SO_LINGER 0): what is still queued is discarded, and the path sees a reset."""
    proxy = HoldProxy(sshd.port)
    try:
        remote = dataclasses.replace(sftp_cfg.remote, port=proxy.port)
        known = Path(str(sftp_cfg.remote.known_hosts))
        known.write_text(sshd.known_hosts_line().replace(f":{sshd.port}", f":{proxy.port}"))
        t = SftpTransport.connect(remote)
        t.abort()
        assert wait_until(lambda: proxy.resets == 1, 5)
    finally:
        proxy.close()


def test_check_warns_of_a_quiet_period_too_short_to_protect(relay_dir: Path) -> None:
    """A quiet period of 0 turns the stalled-path protection off without a word: check says so (! line, exit
    unchanged), and not for the default 2m nor for the local transport, which delivers nothing late."""
    from tests.helpers import run_cli

    config = str(relay_dir / "config.toml")
    (relay_dir / "ftp.pass").write_text("secret\n")
    ftp = {"ONSS_RELAY__REMOTE__PASSWORD_FILE": str(relay_dir / "ftp.pass"), "ONSS_RELAY__REMOTE__USERNAME": "relay"}
    ftp |= {"ONSS_RELAY__REMOTE__TRANSPORT": "ftp", "ONSS_RELAY__REMOTE__HOST": "127.0.0.1"}
    ftp |= {"ONSS_RELAY__REMOTE__PORT": "2121", "ONSS_RELAY__REMOTE__QUIET_PERIOD": '"0s"'}
    short = run_cli("check", "--local", "--config", config, env=ftp)
    [line] = [line for line in short.stdout.splitlines() if "quiet_period" in line]
    assert line.startswith("! remote.quiet_period = 0s") and "GO twice" in line, short.stdout + short.stderr
    default = run_cli("check", "--local", "--config", config, env=ftp | {"ONSS_RELAY__REMOTE__QUIET_PERIOD": '"2m"'})
    assert "quiet_period" not in default.stdout, default.stdout
    local = run_cli("check", "--local", "--config", config, env={"ONSS_RELAY__REMOTE__QUIET_PERIOD": '"0s"'})
    assert "quiet_period" not in local.stdout, local.stdout


def test_the_words_for_a_set_caught_with_its_fi_and_fs_in_flight() -> None:
    """FI and FS are one step: status says they "were" in flight; an older journal's single step still "was"."""
    assert (
        uncertain.why_uncertain("FI and FS", "12:00")
        == "its FI and FS were in flight on a connection given up at 12:00"
    )
    assert uncertain.why_uncertain("FS", "12:00") == "its FS was in flight on a connection given up at 12:00"
