"""Retention (issue 29, item 2): the daemon removes results, answers and sent files some days after a set's final
answer, logs one line per run with the counts and counts them on /metrics; the journal keeps every set; a set
still waiting for its answer keeps everything."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.helpers import Daemon, run_cli, wait_log

# the daemon itself under libfaketime (the faketime command would stand between it and our SIGTERM)
THREE_DAYS_LATER = {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1", "FAKETIME": "+3d"}
DAYS = '\n[retention]\nresults_days = 1\ninbox_days = 1\nsent_days = 1\ninterval = "1h"\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
