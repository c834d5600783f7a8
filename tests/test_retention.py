"""Retention (issue 29, item 2): the daemon removes results, answers and sent files some days after a set's final
answer, logs one line per run with the counts and counts them on /metrics; the journal keeps every set; a set
still waiting for its answer keeps everything."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.fixtures.sshd import free_port
from tests.helpers import Daemon, run_cli, wait_log, wait_until

# the daemon itself under libfaketime (the faketime command would stand between it and our SIGTERM)
THREE_DAYS_LATER = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "FAKETIME": "+3d"}
DAYS = '\n[retention]\nresults_days = 1\ninbox_days = 1\nsent_days = 1\ninterval = "1h"\n'


def files_of(relay_dir: Path, go: str) -> dict[str, list[str]]:
    """Given a set, return its files still in results/, inbox/ (linked answers with their FS and GO) and sent/."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    journal = open_journal_at(cfg.paths.journal_path, readonly=True)
    try:
        row = journal.get_set(go)
        answers = [Path(r.local_path) for r in journal.responses_linked_to(go)]
    finally:
        journal.close()
    assert row is not None and row.data.sent_dir
    stems = {p.name.split(".", 1)[1] for p in answers}
    inbox = [p for p in cfg.paths.inbox_dir.rglob("*") if p.is_file() and p.name.split(".", 1)[1] in stems]
    sent = (
        [p for p in Path(row.data.sent_dir).iterdir() if go[3:] in p.name] if Path(row.data.sent_dir).exists() else []
    )
    return {
        "results": [p.name for p in cfg.paths.results_dir.glob(f"{go}.json")],
        "inbox": sorted(p.name for p in inbox),
        "sent": sorted(p.name for p in sent),
    }


@pytest.mark.slow
def test_the_daemon_prunes_answered_sets_days_later_and_never_a_set_still_waiting(relay_dir: Path) -> None:
    config = relay_dir / "config.toml"
    port = free_port()
    config.write_text(config.read_text() + DAYS + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True)
    answered, waiting = fi_name(1), fi_name(2)
    (outbox / answered).write_bytes(b"<Dimona>1</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0
    (outbox / waiting).write_bytes(b"<Dimona>2</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0  # sent, never answered
    go_answered, go_waiting = "GO." + answered[3:-2], "GO." + waiting[3:-2]
    before = {go: files_of(relay_dir, go) for go in (go_answered, go_waiting)}
    assert all(before[go_answered].values()) and before[go_answered]["inbox"]  # something to prune
    assert all(before[go_waiting][k] for k in ("results", "sent"))

    log = relay_dir / "daemon.log"
    daemon = Daemon(config, log, env=THREE_DAYS_LATER)
    daemon.start()
    try:
        assert wait_log(log, "retention_pruned", timeout=60), log.read_text()[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        assert daemon.stop() == 0, log.read_text()[-3000:]
    line = json.loads(next(ln for ln in log.read_text().splitlines() if "retention_pruned" in ln))
    after = {go: files_of(relay_dir, go) for go in (go_answered, go_waiting)}
    assert after[go_answered] == {"results": [], "inbox": [], "sent": []}
    assert after[go_waiting] == before[go_waiting]  # never pruned before its final answer
    assert line["results_files"] == 1 and line["sent_files"] == len(before[go_answered]["sent"])
    assert line["inbox_files"] == len(before[go_answered]["inbox"])
    assert f'onss_relay_pruned_files_total{{kind="inbox"}} {float(line["inbox_files"])}' in metrics
    status = run_cli("status", go_answered, "--config", str(config))
    assert status.returncode == 0 and "notified" in status.stdout  # the journal keeps the set and its outcome
    cfg = load_config(config, environ={})
    journal = open_journal_at(cfg.paths.journal_path, readonly=True)
    try:
        row = journal.get_set(go_answered)
        assert row is not None and row.state == State.NOTIFIED and len(journal.history(go_answered)) >= 4
    finally:
        journal.close()


def _answered_set(relay_dir: Path) -> str:
    """Given a relay folder, send one declaration, let the simulator answer it, poll: return its GO name."""
    config = relay_dir / "config.toml"
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / fi_name(1)).write_bytes(b"<Dimona>1</Dimona>")
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    Simulator(relay_dir / "remote", SENDER).process()
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0
    return "GO." + fi_name(1)[3:-2]


def _spool_files(root: Path) -> list[str]:
    spool = root / "spool"
    return sorted(str(p.relative_to(spool)) for d in ("results", "inbox", "sent") for p in (spool / d).rglob("*"))


def test_a_copied_spool_prunes_its_own_files_never_the_original(
    relay_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Review of issue 29: a spool copied (or restored) elsewhere keeps the original's absolute paths in its
    journal; retention followed them and pruned the ORIGINAL's sent files and answers. It prunes its own."""
    import shutil
    import time

    from onss_relay.config import RetentionConfig
    from onss_relay.retention import Pruner
    from onss_relay.spool import Spool

    go = _answered_set(relay_dir)
    copy = tmp_path_factory.mktemp("copy") / "relay"
    shutil.copytree(relay_dir, copy, symlinks=True)
    original = _spool_files(relay_dir)
    assert any(f.startswith("sent/") for f in original) and any(f.startswith("inbox/") for f in original)
    cfg = load_config(copy / "config.toml", environ={})
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        counts = Pruner(RetentionConfig(1, 1, 1), journal, Spool(cfg.paths)).run_once(time.time() + 3 * 86400)
    finally:
        journal.close()
    assert _spool_files(relay_dir) == original  # nothing of the original
    left = [f for f in _spool_files(copy) if go[3:] in f or go in f]
    assert left == [] and counts["sent"] > 0 and counts["inbox"] > 0 and counts["results"] == 1, (left, counts)


def test_results_written_again_become_prunable_again(relay_dir: Path) -> None:
    """Review of issue 29: deleting results.cursor writes every result again (README); retention had walked past
    those sets and never pruned them again. A results writer starting from the first set resets retention's
    results walk."""
    import time

    from onss_relay.config import RetentionConfig
    from onss_relay.results import ResultsWriter
    from onss_relay.retention import Pruner
    from onss_relay.spool import Spool

    go = _answered_set(relay_dir)
    cfg = load_config(relay_dir / "config.toml", environ={})
    spool = Spool(cfg.paths)
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        later = time.time() + 3 * 86400
        assert Pruner(RetentionConfig(1, 0, 0), journal, spool).run_once(later)["results"] == 1
        (cfg.paths.root / "results.cursor").unlink()
        ResultsWriter(spool, journal).catch_up()
        assert (cfg.paths.results_dir / f"{go}.json").exists()
        assert Pruner(RetentionConfig(1, 0, 0), journal, spool).run_once(later)["results"] == 1
    finally:
        journal.close()


def test_status_says_when_a_sets_sent_files_were_pruned(relay_dir: Path) -> None:
    """Review of issue 29: `status NAME` named the sent folder of files retention had removed."""
    import time

    from onss_relay.config import RetentionConfig
    from onss_relay.retention import Pruner
    from onss_relay.spool import Spool

    go = _answered_set(relay_dir)
    config = relay_dir / "config.toml"
    assert "pruned" not in run_cli("status", go, "--config", str(config)).stdout
    cfg = load_config(config, environ={})
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        Pruner(RetentionConfig(0, 0, 1), journal, Spool(cfg.paths)).run_once(time.time() + 3 * 86400)
    finally:
        journal.close()
    assert "(no longer there: pruned by retention.sent_days)" in run_cli("status", go, "--config", str(config)).stdout


def test_status_finds_the_sent_files_of_a_spool_moved_to_another_mount_point(
    relay_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Review of issues 25/26/29: `status NAME` looked at the journal's absolute sent/ path, retention at the same
    path re-rooted under the spool: a spool moved elsewhere (or the container's /spool seen from the host) said
    its sent files were gone while they were there."""
    import shutil

    go = _answered_set(relay_dir)
    moved = tmp_path_factory.mktemp("other-mount") / "relay"
    shutil.move(relay_dir, moved)
    status = run_cli("status", go, "--config", str(moved / "config.toml"))
    assert status.returncode == 0, status.stdout + status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("sent files:"))
    assert "no longer there" not in line and line.split()[2].startswith(str(moved / "spool" / "sent")), line
    assert (Path(line.split()[2]) / go).exists(), line


def test_a_provisional_refusal_or_a_pending_notification_is_not_final() -> None:
    """Found by review rev29: retention pruned a set refused only by a provisional ACRF (PA: a final one may
    follow and decides) and a set notified with a pending outcome (ResultCode 2); both keep their files."""
    from onss_relay.journal.model import AcrfRecord, NotificationRecord, SetData, SetRow
    from onss_relay.retention import is_final

    go = "GO." + fi_name(1)[3:-2]

    def row(state: State, data: SetData) -> SetRow:
        return SetRow(go, "T", state, [fi_name(1)], 0.0, 0.0, None, None, data, False)

    refused_pa = AcrfRecord("1", False, None, "FO.x", type_form="PA", final=False)
    refused_fa = AcrfRecord("1", False, None, "FO.x", type_form="FA", final=True)
    accepted = AcrfRecord("0", True, "T1", "FO.x")
    pending = NotificationRecord("2", False, "T1", None, "FO.n")
    done = NotificationRecord("1", True, "T1", None, "FO.n")
    assert not is_final(row(State.REFUSED, SetData(acrf=refused_pa)))
    assert is_final(row(State.REFUSED, SetData(acrf=refused_fa)))
    assert not is_final(row(State.NOTIFIED, SetData(acrf=accepted, notifications=(pending,))))
    assert is_final(row(State.NOTIFIED, SetData(acrf=accepted, notifications=(done,))))
    assert not is_final(row(State.SENT, SetData()))


KILLED_WALK = """
import os, signal, sys, time
from pathlib import Path
from onss_relay import retention
from onss_relay.config import RetentionConfig, load_config
from onss_relay.journal import open_journal_at
from onss_relay.spool import Spool

removed = retention._remove
count = [0]

def remove_then_die(path, sent):  # a SIGKILL at the 1,200th file removed: in the walk's third page
    count[0] += 1
    if count[0] == 1200:
        os.kill(os.getpid(), signal.SIGKILL)
    return removed(path, sent)

retention._remove = remove_then_die
cfg = load_config(Path(sys.argv[1]), environ={})
journal = open_journal_at(cfg.paths.journal_path)
retention.Pruner(RetentionConfig(1, 0, 0), journal, Spool(cfg.paths)).run_once(time.time() + 3 * 86400)
"""


def test_a_retention_walk_killed_half_way_resumes_from_its_last_page(relay_dir: Path) -> None:
    """Review of issue 29: retention.json was written at the end of a walk (or on SIGTERM), so a SIGKILL lost a
    walk's progress and the next one started again from its start (a year of sets). It is saved durably after
    every page: killed in its third page of 500 sets, the walk has kept the end of its second."""
    import subprocess
    import sys
    import time

    from onss_relay.config import RetentionConfig
    from onss_relay.journal import Change, NewSet
    from onss_relay.retention import Pruner
    from onss_relay.spool import Spool

    cfg = load_config(relay_dir / "config.toml", environ={})
    spool = Spool(cfg.paths)
    spool.create()
    names = [f"GO.DIMN.{SENDER}.20260101.{i:05d}.T.1" for i in range(1, 1601)]
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        journal.add_sets([NewSet(go, "T", ["FI" + go[2:] + ".1"]) for go in names])
        journal.transition_many([Change(go, State.FAILED, reason="quarantined for the test") for go in names])
        walk = [(r.updated_at, r.go_name) for r in journal.sets_updated_until(time.time() + 1, (0.0, ""), 2000)]
    finally:
        journal.close()
    for go in names:
        (cfg.paths.results_dir / f"{go}.json").write_text("{}")
    killed = subprocess.run([sys.executable, "-c", KILLED_WALK, str(relay_dir / "config.toml")], timeout=120)
    assert killed.returncode == -9
    assert len(list(cfg.paths.results_dir.glob("GO.*.json"))) == 1600 - 1199
    saved = json.loads((cfg.paths.root / "retention.json").read_text())
    assert tuple(saved["results"]) == walk[999]  # the end of its second page
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        counts = Pruner(RetentionConfig(1, 0, 0), journal, spool).run_once(time.time() + 3 * 86400)
    finally:
        journal.close()
    assert counts["results"] == 1600 - 1199 and not list(cfg.paths.results_dir.glob("GO.*.json"))


def test_status_of_a_copied_spool_tells_its_own_sent_files_not_the_original_s(
    relay_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Review of issue 29: `status NAME` looked for a set's sent files at the journal's absolute path, retention
    at that path re-rooted under its spool (archived.py holds the one rule now). In a copy of a spool whose
    retention pruned them, status says they are gone from the copy, while the original still has them."""
    import shutil
    import time

    from onss_relay.config import RetentionConfig
    from onss_relay.retention import Pruner
    from onss_relay.spool import Spool

    go = _answered_set(relay_dir)
    copy = tmp_path_factory.mktemp("copy") / "relay"
    shutil.copytree(relay_dir, copy, symlinks=True)
    cfg = load_config(copy / "config.toml", environ={})
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        assert Pruner(RetentionConfig(0, 0, 1), journal, Spool(cfg.paths)).run_once(time.time() + 3 * 86400)["sent"]
    finally:
        journal.close()

    def sent_line(root: Path) -> str:
        status = run_cli("status", go, "--config", str(root / "config.toml"))
        assert status.returncode == 0, status.stdout + status.stderr
        return next(ln for ln in status.stdout.splitlines() if ln.startswith("sent files:"))

    in_copy, in_original = sent_line(copy), sent_line(relay_dir)
    assert in_copy.split()[2].startswith(str(copy / "spool" / "sent")), in_copy
    assert in_copy.endswith("(no longer there: pruned by retention.sent_days)"), in_copy
    assert in_original.split()[2].startswith(str(relay_dir / "spool" / "sent")), in_original
    assert "no longer there" not in in_original and (Path(in_original.split()[2]) / go).exists()
    for args in (["status", "--json", go], ["status", "--json"]):  # the JSON names the same folder as the text
        doc = json.loads(run_cli(*args, "--config", str(copy / "config.toml")).stdout)
        documents = [doc["set"]] if "set" in doc else [d for d in doc["sets"] if d["set"] == go]
        assert [d["sent_dir"] for d in documents] == [in_copy.split()[2]], (args, documents)


def test_the_hook_tells_a_set_when_retention_deems_it_final_and_not_before(tmp_path: Path) -> None:
    """Audit26 (lead's note): the hook ran on_result for a set refused only by a provisional ACRF and for one
    notified with a pending outcome, which retention no longer deemed final: one rule (outcome.final_answer)
    now decides both. Neither is told nor recorded due; a final refusal, a decisive notification and a circuit
    test its ACRF accepted are."""
    from onss_relay.config import HooksConfig
    from onss_relay.hook_record import HookRecord
    from onss_relay.hooks import DueOnly, ResultHook
    from onss_relay.journal.model import AcrfRecord, NotificationRecord, SetData, SetRow
    from onss_relay.retention import is_final

    def row(seq: int, state: State, data: SetData, app: str = "DIMN") -> SetRow:
        fi = fi_name(seq, app=app)
        return SetRow("GO" + fi[2:-2], "T", state, [fi], 1.0, 2.0, None, None, data, False, change=seq)

    accepted = AcrfRecord("0", True, "T1", "FO.x")
    not_final = [
        row(1, State.REFUSED, SetData(acrf=AcrfRecord("1", False, None, "FO.x", type_form="PA", final=False))),
        row(
            2, State.NOTIFIED, SetData(acrf=accepted, notifications=(NotificationRecord("2", False, "T1", None, "n"),))
        ),
    ]
    final = [
        row(3, State.REFUSED, SetData(acrf=AcrfRecord("1", False, None, "FO.x", type_form="FA", final=True))),
        row(4, State.NOTIFIED, SetData(acrf=accepted, notifications=(NotificationRecord("1", True, "T1", None, "n"),))),
        row(5, State.ACKNOWLEDGED, SetData(acrf=accepted), app="DMFA"),  # a circuit test: its ACRF is all
    ]
    record = HookRecord(tmp_path / "spool")
    hook = ResultHook(HooksConfig(on_result="true"), record)
    due_only = DueOnly(HookRecord(tmp_path / "one-shot"))
    try:
        for r in not_final + final:
            hook.result_written(r, tmp_path / f"{r.go_name}.json")
            due_only.result_written(r, tmp_path / f"{r.go_name}.json")
        for r in not_final:
            assert not is_final(r) and record.told(r.go_name) is None and r.go_name not in record.pending(), r
        assert due_only.record.pending() == sorted(r.go_name for r in final)
        told = [r.go_name for r in final]
        assert wait_until(lambda: all(record.told(go) is not None for go in told), 20)
        assert all(is_final(r) for r in final)
    finally:
        hook.stop()
