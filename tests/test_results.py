"""results/<GO name>.json follow the journal's change counter: through a wall clock stepping back, after the
HR side consumed them, and for a set whose answer came while it was in go_sending (its sent folder)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from onss_relay.config import load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.helpers import run_cli, wait_until

ONE = fi_name(1)
GO_ONE = "GO" + ONE[2:-2]


def result(relay_dir: Path, go: str = GO_ONE) -> dict[str, object]:
    doc: dict[str, object] = json.loads((relay_dir / "spool" / "results" / f"{go}.json").read_text())
    return doc


def drop_one(relay_dir: Path) -> Path:
    outbox = relay_dir / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / ONE).write_bytes(b"<DmfA/>\r\n")
    return relay_dir / "config.toml"


def test_results_follow_changes_made_after_the_clock_stepped_back_and_stay_consumed(relay_dir: Path) -> None:
    config = drop_one(relay_dir)
    assert run_cli("send", "--once", "--config", str(config)).returncode == 0
    assert result(relay_dir)["state"] == "sent"
    Simulator(relay_dir / "remote", SENDER).process()
    stepped_back = ["faketime", "-f", "-1h"]  # NTP stepped the clock back an hour (or a VM resumed)
    poll = run_cli("poll", "--once", "--config", str(config), wrapper=stepped_back)
    assert poll.returncode == 0, poll.stderr
    assert result(relay_dir)["state"] == "notified"
    results = relay_dir / "spool" / "results"
    for p in results.glob("*.json"):
        p.unlink()  # the HR side consumed them
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0
    assert list(results.glob("*.json")) == [], "consumed results written again though nothing changed"


def test_a_set_answered_in_go_sending_gets_its_sent_folder_in_its_result(relay_dir: Path, tmp_path: Path) -> None:
    """send --once killed right after the commit that puts the set in go_sending (the GO had landed); the
    answer is linked by `poll --once` first, then the next `send --once` archives the set: its result says where."""
    config = drop_one(relay_dir)
    template = tmp_path / "template"
    shutil.copytree(relay_dir, template)
    for n in range(1, 15):
        run = tmp_path / f"n{n}"
        shutil.copytree(template, run)
        first = run_cli(
            "send", "--once", "--config", str(run / "config.toml"), env={"ONSS_RELAY_CRASH_AT_COMMIT": str(n)}
        )
        j = open_journal_at(load_config(run / "config.toml", environ={}).paths.journal_path)
        row = j.get_set(GO_ONE)
        j.close()
        if first.returncode == -signal.SIGKILL and row is not None and row.state == State.GO_SENDING:
            break
        shutil.rmtree(run)
    else:
        raise AssertionError("no commit of send --once left the set in go_sending")
    config = run / "config.toml"
    (run / "remote" / "INTEST" / GO_ONE).write_bytes(b"")  # the GO landed before the crash
    Simulator(run / "remote", SENDER).process()  # consumed and answered
    assert run_cli("poll", "--once", "--config", str(config)).returncode == 0
    assert result(run)["state"] == "notified"
    send = run_cli("send", "--once", "--config", str(config))
    assert send.returncode == 0, send.stderr
    doc = result(run)
    assert doc["state"] == "notified" and doc["sent_dir"], doc
    assert (Path(str(doc["sent_dir"])) / ONE).exists()


@pytest.mark.slow
def test_a_long_results_catch_up_says_how_far_it_is(relay_dir: Path) -> None:
    """Issue 29: results written again after a lost results.cursor on a large journal say their progress (one
    structured line every PROGRESS_EVERY results), instead of nothing until the end."""
    from onss_relay.journal import NewSet
    from onss_relay.results import PROGRESS_EVERY

    config = relay_dir / "config.toml"
    j = open_journal_at(load_config(config, environ={}).paths.journal_path)
    try:
        names = [fi_name(i) for i in range(1, PROGRESS_EVERY * 2 + 10)]
        j.add_sets([NewSet("GO" + n[2:-2], "T", [n]) for n in names])
    finally:
        j.close()
    r = run_cli("--log-level", "info", "poll", "--once", "--config", str(config))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    progress = [x for x in lines if x.get("event") == "results_catching_up"]
    assert [x["written"] for x in progress] == [PROGRESS_EVERY, PROGRESS_EVERY * 2], progress
    assert len(list((relay_dir / "spool" / "results").glob("*.json"))) == len(names)


@pytest.mark.slow
def test_sigterm_to_poll_once_ends_the_results_catch_up_between_pages_and_the_next_poll_resumes(
    relay_dir: Path,
) -> None:
    """Issue 29 review: `poll --once` writing the results of a large journal (a lost results.cursor) obeys SIGTERM
    between two pages (its cursor is durable per page), says it stopped, and the next poll writes the rest."""
    from onss_relay.journal import NewSet
    from onss_relay.results import PROGRESS_EVERY

    config = relay_dir / "config.toml"
    j = open_journal_at(load_config(config, environ={}).paths.journal_path)
    try:
        names = [fi_name(i) for i in range(1, PROGRESS_EVERY * 3 + 10)]
        j.add_sets([NewSet("GO" + n[2:-2], "T", [n]) for n in names])
    finally:
        j.close()
    log = relay_dir / "poll.log"
    args = [sys.executable, "-m", "onss_relay.cli", "--log-level", "info", "poll", "--once", "--config", str(config)]
    with log.open("wb") as f:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=f)
    assert wait_until(lambda: "results_catching_up" in log.read_text(), 120, 0.01), log.read_text()[-2000:]
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert b"stopped before the end (SIGTERM): the next poll resumes" in stdout, stdout
    results = relay_dir / "spool" / "results"
    assert PROGRESS_EVERY <= len(list(results.glob("*.json"))) < len(names)  # whole pages, not the whole journal
    r = run_cli("poll", "--once", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert len(list(results.glob("*.json"))) == len(names)
