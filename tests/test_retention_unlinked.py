"""Issue 29: answers linked to no set (another application's on the same technical user, a lost journal's sets')
leave the inbox ``retention.inbox_days`` after the relay took them, with their FS and GO; one linked meanwhile,
one taken since, one not read yet and every linked set's answer stay. The journal keeps their rows, saying so."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from onss_relay.commands.status import unlinked_lines
from onss_relay.config import Config, RetentionConfig
from onss_relay.journal import open_journal
from onss_relay.retention import DAY, Pruner
from onss_relay.spool import Spool
from tests.conftest import SENDER
from tests.test_history_queries import full_scans, statements  # noqa: F401 (a fixture)

NOW = 1_000 * DAY


def answer(seq: int) -> str:
    return f"FO.NOTI.{SENDER}.20250101.A{seq:04d}.R"


def marks(name: str) -> list[str]:
    return [name, "FS." + name[3:], "GO." + name[3:]]


def walk_plan(cfg: Config, sql: str) -> list[str]:
    """Given a statement, return the indexes its plan reads the answers by, or the whole plan when it scans
    them or sorts them (a year of answers)."""
    db = sqlite3.connect(f"file:{cfg.paths.journal_path}?mode=ro", uri=True)
    try:
        plan = [str(r[3]) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
    finally:
        db.close()
    if any("SCAN" in p or "TEMP B-TREE" in p for p in plan):
        return plan
    return [p.split("USING INDEX ")[1].split(" ")[0] for p in plan if "SEARCH responses" in p][:1]


def inbox(spool: Spool) -> list[str]:
    return sorted(str(p.relative_to(spool.inbox)) for p in spool.inbox.rglob("*") if p.is_file())


def test_answers_linked_to_no_set_leave_the_inbox_inbox_days_after_the_relay_took_them(
    cfg: Config,
    statements: list[tuple[Path, str]],  # noqa: F811
) -> None:
    spool = Spool(cfg.paths)
    spool.create()
    folder = spool.inbox / "OUTTEST"
    folder.mkdir(parents=True, exist_ok=True)
    # (seq, days before NOW the relay took it, kind, linked set): 1-3 old and linked to none (3 still waiting
    # for an ACRF that never came), 4 old and linked to a set, 5 taken since the cut-off; 6, taken between 2
    # and 3, is not read yet (reading it may leave it linked to none: the walk waits for it)
    answers = [
        (1, 5, "notification", None),
        (2, 4, "malformed", None),
        (3, 3, "notification-waiting", None),
        (4, 5, "notification", "GO.DIMN.123456.20250101.00001.T.1"),
        (5, 0.5, "other", None),
    ]
    journal = open_journal(cfg)
    try:
        for seq, _, _, _ in [*answers, (6, 0, "", None)]:
            names = marks(answer(seq))
            for n in names:
                (folder / n).write_bytes(b"<x/>")
            journal.add_responses("OUTTEST", [(n, 4, f"/elsewhere/inbox/OUTTEST/{n}") for n in names])
            for n in names[1:]:
                journal.link_response("OUTTEST", n, "signature" if n.startswith("FS") else "marker", None)
        for seq, _, kind, linked in answers:
            journal.link_response("OUTTEST", answer(seq), kind, linked)
    finally:
        journal.close()
    db = sqlite3.connect(cfg.paths.journal_path)
    with db:
        for seq, days, _, _ in [*answers, (6, 3.5, "", None)]:
            db.execute("UPDATE responses SET at = ? WHERE name LIKE ?", (NOW - days * DAY, f"%.A{seq:04d}.R"))
    db.close()
    before = inbox(spool)

    journal = open_journal(cfg)
    try:
        statements.clear()
        pruner = Pruner(RetentionConfig(0, 1, 0), journal, spool)
        counts = pruner.run_once(NOW)
        assert full_scans(statements) == []  # a year of answers: walked through an index
        walks = [sql for _, sql in statements if "ORDER BY at, folder, name" in sql]
        assert walks and all(walk_plan(cfg, sql) == ["responses_unmatched_at"] for sql in walks), walks
        journal.link_response("OUTTEST", answer(6), "other", None)  # read: another application's
        again = pruner.run_once(NOW)
        assert pruner.totals["unlinked"] == 12  # /metrics: onss_relay_pruned_files_total{kind="unlinked"}
        lines = "\n".join(unlinked_lines(journal, 10))
        rows = {n: journal.get_response("OUTTEST", answer(n)) for n in range(1, 7)}
    finally:
        journal.close()
    first = [f"OUTTEST/{n}" for seq in (1, 2) for n in marks(answer(seq))]
    gone = first + [f"OUTTEST/{n}" for seq in (6, 3) for n in marks(answer(seq))]
    assert inbox(spool) == sorted(set(before) - set(gone)), inbox(spool)
    assert counts["unlinked"] == 6 and counts["inbox"] == 0 and again["unlinked"] == 6, (counts, again)
    walks = json.loads((spool.paths.root / "retention.json").read_text())
    assert walks["unlinked"] == [NOW - 3 * DAY, f"OUTTEST/{answer(3)}"]
    for n in (1, 2, 3, 6):  # the rows stay, linked to no set, saying their file was pruned; status lists them
        row = rows[n]
        assert row is not None and row.linked_set is None and "pruned" in (row.detail or ""), row
        assert "pruned" in lines.split(f"  OUTTEST/{answer(n)}  ")[1].split("\n")[0], lines
    assert rows[3] is not None and rows[3].kind == "notification"  # given up waiting: never read again
    assert rows[4] is not None and rows[4].detail is None and rows[5] is not None and rows[5].detail is None
