"""Retention prunes the on_result hook's told records (hook/told/<GO>) with the results: they no longer grow
for ever, and a set whose record went is still never told twice (every result written again after a lost
results.cursor), while a run still due keeps its record."""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from onss_relay.config import Duration, HooksConfig, PollConfig, RetentionConfig, load_config
from onss_relay.hook_record import HookRecord
from onss_relay.hooks import ResultHook
from onss_relay.journal import open_journal_at
from onss_relay.results import ResultsWriter, write_result
from onss_relay.retention import Pruner
from onss_relay.spool import Spool
from tests.helpers import wait_until
from tests.test_retention import _answered_set


def tell_every_result(relay_dir: Path, hook: Path) -> None:
    """Given a relay folder and a hook command, write every result again (results.cursor lost) with the hook
    told of each, as a daemon starting would, and wait for its runs."""
    cfg = load_config(relay_dir / "config.toml", environ={})
    spool = Spool(cfg.paths)
    (cfg.paths.root / "results.cursor").unlink(missing_ok=True)
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        result_hook = ResultHook(HooksConfig(str(hook), Duration(30)), HookRecord(cfg.paths.root))
        result_hook.resume(journal, PollConfig(), lambda row: write_result(spool, journal, row))
        writer = ResultsWriter(spool, journal)
        writer.on_write = result_hook.result_written
        writer.catch_up()
        due = cfg.paths.root / "hook" / "due"  # a stop ends what runs: wait until every run due has run
        assert wait_until(lambda: not any(due.iterdir()), 30), sorted(p.name for p in due.iterdir())
        result_hook.stop()
    finally:
        journal.close()


def test_told_records_are_pruned_with_the_results_and_a_set_is_still_never_told_twice(
    relay_dir: Path, tmp_path: Path
) -> None:
    go = _answered_set(relay_dir)  # notified
    calls, hook = tmp_path / "calls.txt", tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$ONSS_RELAY_SET $ONSS_RELAY_EVENT" >> {calls}\n')
    hook.chmod(0o755)
    tell_every_result(relay_dir, hook)
    assert calls.read_text().splitlines() == [f"{go} notified"]
    root = relay_dir / "spool"
    told = root / "hook" / "told" / go
    assert told.exists()

    cfg = load_config(relay_dir / "config.toml", environ={})
    journal = open_journal_at(cfg.paths.journal_path)
    try:
        later = time.time() + 3 * 86400
        HookRecord(root).due(go, ("notified", 1, False))  # a run due (the daemon killed while it ran)
        assert Pruner(RetentionConfig(1, 0, 0), journal, Spool(cfg.paths)).run_once(later)["hook"] == 0
        assert told.exists()  # never pruned while a run of it is due
        HookRecord(root).forget_due(go)
        (root / "retention.json").unlink()  # walk again from the first set
        with structlog.testing.capture_logs() as logs:
            counts = Pruner(RetentionConfig(1, 0, 0), journal, Spool(cfg.paths)).run_once(later)
    finally:
        journal.close()
    assert counts["hook"] == 1 and not told.exists(), counts
    assert [e["hook_files"] for e in logs if e["event"] == "retention_pruned"] == [1]

    tell_every_result(relay_dir, hook)  # every result written again: its record is gone, it is not told again
    assert calls.read_text().splitlines() == [f"{go} notified"]
