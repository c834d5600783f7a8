"""The upload and poll stages over an in-memory transport (tests/fake_transport.py): the exactly-once
order seen from outside the transports, retries after injected faults, and the gate order enforced by
``Upload`` whatever a transport does."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from onss_relay.config import Config
from onss_relay.errors import TransientRemoteError
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.transport.base import GateOrderError, PutFile, Step, Upload
from tests.conftest import fi_name
from tests.fake_transport import FakeTransport
from tests.test_uploader_sftp import drop_sets


class Remote:
    """The remote home shared by every connection the stages open, with the operations they made."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str], bytes] = {}
        self.events: list[tuple[str, str]] = []
        self.faults: set[tuple[str, str]] = set()  # (operation, name) to fail once
        self.states_at_go: dict[str, State | None] = {}
        self.relay: Relay | None = None
        self.connections = 0

    def fail_once(self, op: str, name: str) -> bool:
        if (op, name) in self.faults:
            self.faults.discard((op, name))
            return True
        return False

    def on_write(self, name: str) -> None:
        if name.startswith("GO") and self.relay is not None:
            row = self.relay.journal.get_set(name)
            self.states_at_go[name] = row.state if row else None

    def connect(self) -> FakeTransport:
        self.connections += 1
        return FakeTransport(self.files, self.events, self.fail_once, self.on_write)


@pytest.fixture
def remote(cfg: Config):  # type: ignore[no-untyped-def]
    r = Remote()
    r.relay = Relay(cfg, connect=r.connect, max_attempts=5)
    r.relay.uploader.max_wait = 0.01
    yield r
    r.relay.close()


def drop(relay: Relay, n: int, parts: int = 2) -> list[str]:
    return drop_sets(relay.spool.outbox, [(seq, "T", parts) for seq in range(1, n + 1)])


def writes(remote: Remote, name: str) -> list[int]:
    return [i for i, (op, n) in enumerate(remote.events) if op == "put" and n == name]


def test_each_set_goes_fi_then_fs_then_go_and_the_go_only_after_go_sending(remote: Remote) -> None:
    relay = remote.relay
    assert relay is not None
    gos = drop(relay, 5)
    report = relay.send_once(wait_for_settle=False)
    assert sorted(report.upload.sent) == sorted(gos)
    for go in gos:
        row = relay.journal.get_set(go)
        assert row is not None and row.state == State.SENT and row.archived
        [go_at] = writes(remote, go)
        fis = [i for n in row.parts for i in writes(remote, n)]
        fss = [i for n in row.data.fs for i in writes(remote, n)]
        assert len(fis) == len(fss) == 2
        assert max(fis) < min(fss) and max(fss) < go_at
        assert remote.states_at_go[go] == State.GO_SENDING  # durable in the journal when the GO was opened


def test_a_fault_at_the_go_is_retried_and_the_go_written_once(remote: Remote) -> None:
    relay = remote.relay
    assert relay is not None
    gos = drop(relay, 3)
    remote.faults = {("put", gos[1]), ("put", fi_name(3, total=2, part=2))}
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.error is None and sorted(report.upload.sent) == sorted(gos)
    for go in gos:
        assert len(writes(remote, go)) == 1, go
    assert ("failed-put", gos[1]) in remote.events
    assert remote.connections >= 2  # the failed connection was replaced
    assert relay.journal.history(gos[1])[-1][2] == "GO uploaded"


def test_a_set_interrupted_in_go_sending_never_resends_fi_or_fs(remote: Remote) -> None:
    relay = remote.relay
    assert relay is not None
    [go] = drop(relay, 1)
    remote.faults = {("put", go)}
    relay.uploader.max_attempts = 1  # the round gives up: the set stays in go_sending
    relay.send_once(wait_for_settle=False)
    assert relay.journal.get_set(go).state == State.GO_SENDING  # type: ignore[union-attr]
    before = len([e for e in remote.events if e[0] == "put" and not e[1].startswith("GO")])
    relay.uploader.max_attempts = 5
    relay.uploader.upload_pending()
    assert len([e for e in remote.events if e[0] == "put" and not e[1].startswith("GO")]) == before
    assert len(writes(remote, go)) == 1 and relay.journal.get_set(go).state == State.SENT  # type: ignore[union-attr]


def test_the_poller_deletes_remotely_only_what_it_holds_locally(remote: Remote) -> None:
    relay = remote.relay
    assert relay is not None
    name = "FO.ACRF.999999.20260101.00001.T"
    remote.files[("OUTTEST", name)] = b"<ACRF/>"
    remote.files[("OUTTEST", "GO" + name[2:])] = b""
    remote.faults = {("get", "GO" + name[2:])}
    with pytest.raises(TransientRemoteError):
        relay.poll_once()  # the GO's download fails: nothing of the set is deleted remotely
    assert ("OUTTEST", name) in remote.files and ("OUTTEST", "GO" + name[2:]) in remote.files
    relay.poll_once()
    assert remote.files == {}
    assert (relay.spool.inbox / "OUTTEST" / name).read_bytes() == b"<ACRF/>"
    deletes = [n for op, n in remote.events if op == "delete"]
    gets = [n for op, n in remote.events if op == "get"]
    assert sorted(deletes) == sorted(set(gets))
    for n in deletes:  # every delete comes after a whole download of that file
        assert max(i for i, e in enumerate(remote.events) if e == ("get", n)) < remote.events.index(("delete", n))


class SkipsCommit(FakeTransport):
    """A transport with a bug: it writes a step's files without committing its gate."""

    def run_uploads(self, uploads, window):  # type: ignore[no-untyped-def]
        for up in uploads:
            if up is None:
                continue
            for i in range(len(up.steps)):
                up.enter(i)
                for f in up.files(i):
                    self.put_bytes(b"", f.folder, f.name)


def test_upload_refuses_a_step_whose_gate_is_not_committed() -> None:
    committed: list[str] = []
    up = Upload(
        "GO.X",
        [Step("FI", [PutFile("IN", "FI.X")]), Step("GO", [PutFile("IN", "GO.X")])],
        gate=lambda step: None,
        done=lambda: None,
        commit=lambda: committed.append("c"),
    )
    assert up.enter(0)
    with pytest.raises(GateOrderError):
        up.files(0)  # gate ran but is not durable
    up.commit()
    assert [f.name for f in up.files(0)] == ["FI.X"]
    with pytest.raises(GateOrderError):
        up.finish()  # the GO step has not run
    with pytest.raises(GateOrderError):
        up.files(1)
    assert up.enter(1)
    up.commit()
    up.files(1)
    up.finish()


def test_a_transport_that_skips_the_commit_never_writes_a_go(cfg: Config, tmp_path: Path) -> None:
    files: dict[tuple[str, str], bytes] = {}
    events: list[tuple[str, str]] = []
    relay = Relay(cfg, connect=lambda: SkipsCommit(files, events), max_attempts=1)
    try:
        [go] = drop(relay, 1, parts=1)
        with structlog.testing.capture_logs() as logs:  # the bug's traceback stays out of the run's log files
            report = relay.send_once(wait_for_settle=False)
        assert any(e["event"] == "upload_crashed" for e in logs)
        assert report.upload.error is not None and "GateOrderError" in str(report.upload.error)
        assert events == [] and files == {}  # refused before the first file
        assert relay.journal.get_set(go).state == State.SIGNED  # type: ignore[union-attr]
    finally:
        relay.close()


def test_claim_upload_and_results_read_the_journal_per_batch_not_per_set(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: claiming, uploading and writing the results of 40 sets read the journal a few times per batch
    (each read a round trip to a PostgreSQL journal), not once or more per set: the claim's rows and ACRF-133
    sequence check, the uploader's rows and the results' histories and keys are each read for many sets at once."""
    from onss_relay.journal.sqlite import SqliteJournal

    files: dict[tuple[str, str], bytes] = {}
    relay = Relay(cfg, connect=lambda: FakeTransport(files, []))
    reads = {"n": 0}
    real_read = SqliteJournal._read

    def counted(self: SqliteJournal):  # type: ignore[no-untyped-def]
        reads["n"] += 1
        return real_read(self)

    try:
        gos = drop(relay, 40, parts=1)
        monkeypatch.setattr(SqliteJournal, "_read", counted)
        relay.claim()
        claim_reads, reads["n"] = reads["n"], 0
        relay.signer.sign_queued()
        reads["n"] = 0
        report = relay.uploader.upload_pending()
        upload_reads, reads["n"] = reads["n"], 0
        written = relay.results.catch_up()
        results_reads = reads["n"]
        monkeypatch.undo()
        assert sorted(report.sent) == sorted(gos) and written >= 40
        assert all(("INTEST", go) in files for go in gos)
        # a few reads per batch (the uploader's: its refills, 16 rows at a time, the uncertain sets, the archive
        # catch-up), never one per set: before issue 27, 40 sets cost at least 80, 40 and 80 reads
        assert claim_reads <= 5 and upload_reads < 20 and results_reads <= 4, (claim_reads, upload_reads, results_reads)
    finally:
        relay.close()


def test_sets_sent_together_are_archived_with_one_look_for_writers(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: 64 sets whose GOs went out together are archived and recorded sent in one batch per upload
    thread: one look in /proc for writers still holding their originals (a scan of every descriptor of every
    process, the largest cost of a sent set on a busy machine) and one journal commit, not one of each per 16."""
    from onss_relay import spool as spool_module
    from onss_relay.stages import upload_queue

    files: dict[tuple[str, str], bytes] = {}
    relay = Relay(cfg, connect=lambda: FakeTransport(files, []))
    looks: list[int] = []
    real_look = spool_module.open_for_writing

    def counted(paths):  # type: ignore[no-untyped-def]
        paths = list(paths)
        looks.append(len(paths))
        return real_look(paths)

    try:
        gos = drop(relay, 64, parts=1)
        relay.claim()
        relay.signer.sign_queued()
        monkeypatch.setattr(spool_module, "open_for_writing", counted)
        monkeypatch.setattr(upload_queue, "SENT_DELAY", 3600.0)  # batches by count alone, whatever the load
        report = relay.uploader.upload_pending()
        assert sorted(report.sent) == sorted(gos)
        # one batch per upload thread (each sends its share of the 64): before, one per 16 sets, 4 at least
        assert sum(looks) == 64 and len(looks) <= cfg.remote.connections < 4, (looks, cfg.remote.connections)
        assert {relay.journal.get_set(go).state for go in gos} == {State.SENT}  # type: ignore[union-attr]
        assert not [p for p in relay.spool.outbox.iterdir() if p.name.startswith("FI")]  # every original held
    finally:
        relay.close()


def test_a_rescan_reads_no_claimed_set_again_until_the_journal_changes_it(
    cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claimed sets stay in the outbox until sent, and every file written wakes a scan: a scan that read every
    present set's row again made a trickle of files quadratic (300 files 20 ms apart: 389 scans reading up to
    300 rows each). A set the journal changed since (here failed, its files back in the outbox as `requeue`
    leaves them) is read again and claimed again."""
    from onss_relay.journal.sql_journal import SqlJournal

    relay = Relay(cfg, connect=lambda: FakeTransport({}, []))
    asked: list[str] = []
    real = SqlJournal.sets_by_names

    def counted(self: SqlJournal, go_names: list[str]):  # type: ignore[no-untyped-def]
        asked.extend(go_names)
        return real(self, go_names)

    monkeypatch.setattr(SqlJournal, "sets_by_names", counted)
    try:
        gos = drop(relay, 30, parts=1)
        assert sorted(relay.claim()) == sorted(gos)
        relay.claim()  # their rows changed since the first scan read them (their claim): read once more
        asked.clear()
        assert relay.claim() == [] and asked == []  # nothing changed, nothing read
        relay.journal.transition(gos[3], State.FAILED, "set aside")
        assert relay.claim() == [gos[3]] and asked == [gos[3]]
        assert relay.journal.get_set(gos[3]).state == State.QUEUED  # type: ignore[union-attr]
    finally:
        relay.close()
