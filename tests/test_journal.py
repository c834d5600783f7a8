"""The journal: legal and illegal transitions, and survival of a process killed mid-transaction."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from onss_relay.errors import IllegalTransition
from onss_relay.journal import TRANSITIONS, SetData, State, open_journal_at

GO = "GO.DMFA.123456.20260101.00001.T.1"
HAPPY = [State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT, State.ACKNOWLEDGED, State.NOTIFIED]


def test_happy_path_and_history(tmp_path: Path) -> None:
    j = open_journal_at(tmp_path / "j.db")
    j.add_set(GO, "T", ["FI.x"], SetData(sizes={"FI.x": 3}))
    for s in HAPPY:
        j.transition(GO, s, ticket="0ABC" if s == State.ACKNOWLEDGED else None)
    row = j.get_set(GO)
    assert row and row.state == State.NOTIFIED and row.ticket == "0ABC" and row.data.sizes == {"FI.x": 3}
    assert [h[1] for h in j.history(GO)] == ["queued", *HAPPY]
    assert j.set_by_ticket("0ABC") == row


@pytest.mark.parametrize("old", list(State))
def test_every_forbidden_transition_raises(tmp_path: Path, old: State) -> None:
    j = open_journal_at(tmp_path / "j.db")
    for new in State:
        if new in TRANSITIONS[old]:
            continue
        with pytest.raises(IllegalTransition):
            j._db.execute("DELETE FROM sets")
            j._db.execute(
                "INSERT INTO sets (go_name, env, state, parts, created_at, updated_at) VALUES (?,?,?,?,0,0)",
                (GO, "T", old, "[]"),
            )
            j.transition(GO, new)
        assert j.get_set(GO).state == old  # type: ignore[union-attr]


def test_go_sending_can_only_become_sent(tmp_path: Path) -> None:
    j = open_journal_at(tmp_path / "j.db")
    j.add_set(GO, "T", [])
    for s in HAPPY[:3]:
        j.transition(GO, s)
    for bad in (State.UPLOADING, State.SIGNED, State.FAILED, State.QUEUED):
        with pytest.raises(IllegalTransition):
            j.transition(GO, bad)


def test_quarantined_name_may_be_queued_again_but_a_sent_one_not(tmp_path: Path) -> None:
    j = open_journal_at(tmp_path / "j.db")
    j.add_failed(GO, "T", ["FI.x"], "bad")
    j.add_set(GO, "T", ["FI.x"])
    assert j.get_set(GO).state == State.QUEUED  # type: ignore[union-attr]
    for s in HAPPY[:4]:
        j.transition(GO, s)
    with pytest.raises(IllegalTransition):
        j.add_set(GO, "T", ["FI.x"])


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from onss_relay.journal import SetData, State, open_journal_at
    j = open_journal_at(Path(sys.argv[1]))
    i = 0
    print("ready", flush=True)
    while True:
        go = f"GO.DMFA.123456.20260101.{i % 99999 + 1:05d}.T.1"
        j.add_set(go, "T", ["FI"] * 50, SetData(extras=("x" * 20000,)))
        for s in (State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT):
            j.transition(go, s, data=DataChange(fs=("y" * 20000,)))
        i += 1
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.2, 0.35, 0.5, 0.8])
def test_survives_sigkill_mid_transaction(tmp_path: Path, delay: float) -> None:
    db = tmp_path / "j.db"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()
    j = open_journal_at(db)  # reopening recovers the WAL
    rows = j.sets_in(*State)
    assert rows, "the writer committed nothing before it was killed"
    for row in rows:
        # every set is in a state the machine allows, and its history ends with that state
        assert row.state in (State.QUEUED, State.SIGNED, State.UPLOADING, State.GO_SENDING, State.SENT)
        assert j.history(row.go_name)[-1][1] == row.state
    # the journal keeps working after the crash
    j.transition(
        rows[-1].go_name,
        State.FAILED
        if rows[-1].state in (State.QUEUED, State.SIGNED, State.UPLOADING)
        else State.SENT
        if rows[-1].state == State.GO_SENDING
        else State.ACKNOWLEDGED,
    )


def test_pragmas(tmp_path: Path) -> None:
    j = open_journal_at(tmp_path / "j.db")
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_every_state_change_is_one_log_event_with_its_duration(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    j = open_journal_at(tmp_path / "j.db")
    with capture_logs() as events:
        j.add_set(GO, "T", ["FI.x"])
        for s in HAPPY[:4]:
            j.transition(GO, s, detail="why")
    changes = [e for e in events if e["event"] == "set_state"]
    assert [e["state"] for e in changes] == ["queued", *HAPPY[:4]]
    assert all(e["set"] == GO for e in changes)
    assert all(isinstance(e["duration_ms"], int) and e["previous"] for e in changes[1:])


def test_a_writer_waits_for_another_process_lock_then_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onss_relay.errors import JournalBusy
    from onss_relay.journal import sqlite as journal_module

    path = tmp_path / "journal.sqlite"
    j = open_journal_at(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # as another process would
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.2, lambda: other.execute("COMMIT")).start()
    t0 = time.monotonic()
    j.add_set("GO.DMFA.123456.20260101.00001.T.1", "T", ["FI.DMFA.123456.20260101.00001.T.1.1"])
    assert 0.15 < time.monotonic() - t0 < 2  # waited for the lock, then went on soon after it was free
    other.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(journal_module, "BUSY_TIMEOUT_MS", 300)
    with pytest.raises(JournalBusy, match="locked by another process"):
        j.add_set("GO.DMFA.123456.20260101.00002.T.1", "T", ["FI.DMFA.123456.20260101.00002.T.1.1"])
    other.execute("ROLLBACK")
    assert j.get_set("GO.DMFA.123456.20260101.00002.T.1") is None
    j.close()


SHARED_MOUNTS = """/dev/vda1 / ext4 rw 0 0
fileserver:/payroll /srv/relay nfs4 rw 0 0
//nas/hr /mnt/hr cifs rw 0 0
overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0
gluster:/vol /mnt/gluster fuse.glusterfs rw 0 0
ceph /mnt/ceph fuse.ceph-fuse rw 0 0
/dev/sdb /mnt/cluster ocfs2 rw 0 0
"""


@pytest.mark.parametrize(
    "spool, refused",
    [("/srv/relay/spool", True), ("/mnt/hr/spool", True), ("/var/lib/onss-relay", False)]
    + [("/var/lib/docker/overlay2/x/merged/spool", False)]  # a container's own disk is local
    # review of issue 25: FUSE forms of cluster filesystems and shared-disk cluster filesystems were accepted
    + [("/mnt/gluster/spool", True), ("/mnt/ceph/spool", True), ("/mnt/cluster/spool", True)],
)
def test_a_sqlite_journal_is_refused_on_a_network_filesystem(spool: str, refused: bool) -> None:
    from onss_relay.journal import sqlite_place_problem

    why = sqlite_place_problem(Path(spool) / "journal.db", SHARED_MOUNTS)
    assert (why is not None) is refused
    if why is not None:
        assert "journal.url" in why and f"{spool}/journal.db" in why


def test_open_journal_refuses_the_spool_on_a_network_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onss_relay import journal as journal_module
    from onss_relay.config import load_config
    from onss_relay.errors import JournalError
    from tests.conftest import write_config

    cfg = load_config(write_config(tmp_path), environ={})
    real = journal_module.sqlite_place_problem
    monkeypatch.setattr(
        journal_module,
        "sqlite_place_problem",
        lambda path, mounts=None: real(path, f"{mounts or ''}\nserver:/x {cfg.paths.root} nfs rw 0 0\n"),
    )
    with pytest.raises(JournalError, match="network filesystem .nfs.*journal.url"):
        journal_module.open_journal(cfg)


def test_set_data_is_stored_as_asdict_would_without_deep_copying_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27 (cpu27): a set's data is written at every change (three per set sent); dataclasses.asdict
    deep-copied every value first, ~0.1 ms each. The JSON stored is the same, nested records included."""
    import copy
    import dataclasses
    import json

    from onss_relay.journal import model

    anomaly = model.AnomalyRecord("e1", "C", "/a/b", True, tag_name="t")
    data = SetData(
        sizes={"FI.a": 12},
        identities={"FI.a": (1, 2)},
        fs=("FS.a",),
        digests={"FI.a": "sha256:ab"},
        acrf=model.AcrfRecord("1", True, "T", "/f", (model.CodeMeaning("c", "d"),)),
        notifications=(
            model.NotificationRecord(
                "1", False, "T", "D", "/n", (anomaly,), (model.WorkerResult("1", "1", "refused", (anomaly,), 1),)
            ),
        ),
        answers=(model.AnswerRecord("k", "n", "f", {"a": "b"}),),
        uncertain=model.Uncertain(1.0, 2.0, "b", 3.0, "FI"),
    )
    expected = json.dumps({"version": model.DATA_VERSION} | dataclasses.asdict(data))

    def no_copy(*_: object) -> None:
        raise AssertionError("set data deep-copied to be stored")

    monkeypatch.setattr(copy, "deepcopy", no_copy)
    assert data.to_json() == expected
    assert SetData.from_json(data.to_json()) == data


def test_a_set_row_read_again_is_parsed_once_and_equals_a_fresh_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 (parentcpu): the uploading process read each set's row ~6 times on its way out (refill, taken
    batch, both gates, sent, results), parsing its JSON each time (a tenth of its CPU). A text read or just
    written is parsed once; what a read returns is still what parsing its text gives, type for type."""
    from onss_relay.journal import model

    parsed: list[str] = []
    real = model.SetData._parse

    def counting(text: str) -> SetData:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(model.SetData, "_parse", staticmethod(counting))
    j = open_journal_at(tmp_path / "j.db")
    name = "GO.DIMN.123456.20261201.00001.T.1"
    j.add_set(
        name, "T", [name.replace("GO.", "FI.", 1) + ".1"], SetData(sizes={"FI.a": 1}, identities={"FI.a": (3, 4)})
    )
    for _ in range(3):
        row = j.get_set(name)
        assert row is not None
    j.transition(name, State.SIGNED, data=model.DataChange(fs=("FS.a",), digests={"FI.a": "sha256:ab"}))
    for _ in range(3):
        row = j.get_set(name)
        assert row is not None
    assert len(parsed) <= 1  # the first read of the row the claim wrote (another process in a real run)
    stored = j.sets_in(State.SIGNED)[0].data
    with sqlite3.connect(tmp_path / "j.db") as db:
        fresh = real(db.execute("SELECT data FROM sets").fetchone()[0])
    assert stored == fresh
    assert {f: type(getattr(stored, f)) for f in ("sizes", "fs", "digests", "identities")} == {
        f: type(getattr(fresh, f)) for f in ("sizes", "fs", "digests", "identities")
    }
    assert stored.identities["FI.a"] == (3, 4) and type(stored.identities["FI.a"]) is tuple


def test_set_data_with_records_or_other_containers_is_not_kept_as_written() -> None:
    """What a row read gives back is a parse's: a SetData holding records, a list or another Mapping is never
    handed back as it was written (only plain data, equal to its parse type for type, is)."""
    import types

    from onss_relay.journal import model

    odd = SetData(sizes=types.MappingProxyType({"FI.b": 2}), fs=["FS.b"])  # type: ignore[arg-type]
    back = SetData.from_json(odd.to_json())
    assert back is not odd and type(back.sizes) is dict and back.fs == ("FS.b",)
    with_acrf = SetData(acrf=model.AcrfRecord("1", True, "T", "/f", (model.CodeMeaning("c", "d"),)))
    assert SetData.from_json(with_acrf.to_json()) is not with_acrf
    plain = SetData(sizes={"FI.c": 3}, fs=("FS.c",))
    assert SetData.from_json(plain.to_json()) is plain
    assert SetData.from_json(plain.to_json()) == model.SetData._parse(plain.to_json())


def test_a_gate_that_changes_no_data_keeps_the_stored_text_and_an_old_version_is_still_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 (parentcpu): each gate (uploading with ``uncertain=None``, go_sending with no change) wrote the
    set's data again, the same JSON (~25 us each, two per set). A change that sets nothing new now keeps the
    text stored; data stored by an older version is still rewritten in this version's form."""
    import json

    from onss_relay.journal import model
    from onss_relay.journal.data_change import DataChange

    j = open_journal_at(tmp_path / "j.db")
    go, old = "GO.DIMN.123456.20261201.00001.T.1", "GO.DIMN.123456.20261201.00002.T.1"
    for name in (go, old):
        j.add_set(name, "T", [name.replace("GO.", "FI.", 1) + ".1"], SetData(sizes={"FI.a": 1}))
        j.transition(name, State.SIGNED, data=DataChange(fs=("FS.a",), digests={"FI.a": "sha256:ab"}))
    v1 = json.dumps({"sizes": {"FI.a": 1}, "fs": ["FS.a"], "digests": {"FI.a": "sha256:ab"}})
    with sqlite3.connect(tmp_path / "j.db") as db:
        db.execute("UPDATE sets SET data = ? WHERE go_name = ?", (v1, old))

    def stored() -> dict[str, str]:
        with sqlite3.connect(tmp_path / "j.db") as db:
            return dict(db.execute("SELECT go_name, data FROM sets").fetchall())

    before = stored()
    dumped: list[SetData] = []
    real = SetData.to_json
    monkeypatch.setattr(SetData, "to_json", lambda self: dumped.append(self) or real(self))
    j.transition_many(
        [
            model.Change(go, State.UPLOADING, data=DataChange(uncertain=None)),
            model.Change(old, State.UPLOADING, data=DataChange(uncertain=None)),
        ]
    )
    j.transition(go, State.GO_SENDING)
    after = stored()
    assert after[go] == before[go] and len(dumped) == 1  # only the old version's text written again
    assert json.loads(after[old])["version"] == model.DATA_VERSION and SetData.from_json(after[old]).fs == ("FS.a",)
    j.transition(go, State.SENT, data=DataChange(sent_dir="/sent/x", fs=("FS.a",)))  # one value new: written
    assert json.loads(stored()[go])["sent_dir"] == "/sent/x" and len(dumped) == 2
    j.close()


def test_a_child_forked_while_the_parsed_cache_is_locked_can_still_use_it() -> None:
    """The parsed-data cache is shared by threads under a lock: a child forked while another thread held it
    (the uploading threads run while a command may fork) gets a lock of its own, not one held forever."""
    from onss_relay.journal import model

    with model._PARSED._lock:
        pid = os.fork()
        if pid == 0:  # the child: remember a value, with a time limit in case the lock is still held
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # killed by it, if stuck
            signal.alarm(5)
            model._PARSED.remember("{}", SetData())
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
