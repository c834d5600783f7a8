"""One rendering of a set (issue 26): `status NAME`, `status --json NAME`, results/<GO>.json and the set's page
are the same view (views/set_view.py), and the views read nothing from commands/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import onss_relay
from onss_relay.config import Config
from onss_relay.journal import AnomalyRecord, NotificationRecord, WorkerResult, open_journal_at
from onss_relay.results import ResultsWriter
from onss_relay.spool import Spool
from tests.helpers import run_cli
from tests.test_status_page import GO, get, notified_set, sources

PACKAGE = Path(onss_relay.__file__).parent
VOLATILE = ("overdue",)  # judged at the time each is shown


def imported_modules(path: Path) -> set[str]:
    """Given a module's file, return the onss_relay modules it imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("onss_relay")}


def test_the_views_and_results_read_nothing_from_the_commands() -> None:
    """What a set is shown as lives in views/: neither the views nor results.py reach into commands/."""
    for path in [*sorted((PACKAGE / "views").glob("*.py")), PACKAGE / "results.py"]:
        reached = {m for m in imported_modules(path) if m.startswith("onss_relay.commands")}
        assert not reached, f"{path.name} imports {reached}"


def test_status_results_and_the_page_show_one_rendering_of_a_set(cfg: Config, relay_dir: Path) -> None:
    """A notified set with a worker's anomaly: results/<GO>.json is the document `status --json NAME` prints
    (its result in words included), `status NAME` and the set's page say the same result, codes and worker."""
    spool = Spool(cfg.paths)
    spool.create()
    journal = open_journal_at(cfg.paths.journal_path)
    anomaly = AnomalyRecord(
        "90373-333", "B", "/x/Start", True, "blocking", "Start", "2026-13-01", None, "start date wrong"
    )
    worker = WorkerResult("90042125519", "0", "refused", (anomaly,), 1)
    notification = NotificationRecord("0", False, "0HANDLED", "3", "notif.xml", workers=(worker,), summary="refused")
    notified_set(journal, GO, notification)
    ResultsWriter(spool, journal).catch_up()
    in_results = json.loads((spool.results / f"{GO}.json").read_text())
    printed = run_cli("status", "--json", GO, "--config", str(relay_dir / "config.toml"))
    assert printed.returncode == 0, printed.stderr
    in_status = json.loads(printed.stdout)["set"]
    for late in VOLATILE:
        in_results.pop(late), in_status.pop(late)
    assert in_results == in_status
    assert in_results["result"] == "refused"
    text = run_cli("status", GO, "--config", str(relay_dir / "config.toml")).stdout
    html = get(sources(journal, spool), f"/set/{GO}").body.decode()
    for said in (f"result:      {in_results['result']}", "90042125519", "90373-333 start date wrong"):
        assert said in text, (said, text)
    for shown in ("90042125519", "90373-333", "start date wrong", "/x/Start", "2026-13-01", in_results["ticket"]):
        assert shown in html, shown
    journal.close()
