"""The status page in a real headless browser after a full cycle on the real sshd (issue 26): an accepted, a
refused, a multi-worker and an overdue set, a quarantined file with a hostile name; the overview and a set's
page show them, a search by a worker's INSS finds that worker's set, and the README's screenshots are made."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from onss_relay.journal import State
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name
from tests.fixtures.browser import dump_dom, screenshot
from tests.fixtures.sshd import SshServer, free_port
from tests.helpers import Daemon, state_of, wait_until

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[1] / "docs"
HOSTILE_NAME = "FI.<img src=x onerror=alert(1)>.xml"


def go_of(fi: str) -> str:
    return "GO" + fi[2:-2]


def dimona(*workers: str, marks: str = "") -> bytes:
    people = "".join(f"<DimonaIn><NaturalPerson><INSS>{w}</INSS></NaturalPerson></DimonaIn>\r\n" for w in workers)
    return f"<Dimona>\r\n{people}{marks}</Dimona>\r\n".encode()


def test_the_page_shows_a_full_cycle_in_a_browser(sftp_dir: Path, sshd: SshServer, tmp_path: Path) -> None:
    config, log = sftp_dir / "config.toml", sftp_dir / "daemon.log"
    port = free_port()
    text = config.read_text().replace('interval = "1s"', 'interval = "1s"\nacrf_overdue = "4s"')
    config.write_text(text + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    outbox = sftp_dir / "spool" / "outbox"
    accepted, refused, several, late = fi_name(11), fi_name(12), fi_name(13), fi_name(14)
    daemon = Daemon(config, log)
    daemon.start()
    (outbox / accepted).write_bytes(dimona("85073003328"))
    (outbox / refused).write_bytes(dimona("86010100123", marks="<!-- SIMULATE-ACRF:REFUSE-FINAL -->\r\n"))
    (outbox / several).write_bytes(
        dimona("90042125519", "91020200234", marks="<!-- SIMULATE-ANOMALY:90373-333:B:2 -->\r\n")
    )
    (outbox / HOSTILE_NAME).write_bytes(b"<x/>")
    try:
        answered = {go_of(f) for f in (accepted, refused, several)}
        final = {State.NOTIFIED, State.REFUSED}

        def all_answered() -> bool:
            Simulator(sshd.home, SENDER).process()
            return all(state_of(config, go) in final for go in answered)

        assert wait_until(all_answered, 90, 0.5), log.read_text()[-3000:]
        (outbox / late).write_bytes(dimona("92030300345"))  # no simulator from now on: its ACRF never comes
        assert wait_until(lambda: state_of(config, go_of(late)) == State.SENT, 60), log.read_text()[-3000:]
        base = f"http://127.0.0.1:{port}"
        profile = tmp_path / "chromium"

        def overview_shows_it_overdue() -> bool:
            return "OVERDUE" in section(dump_dom(base + "/", profile), "overdue")

        assert wait_until(overview_shows_it_overdue, 60, 1)
        dom = dump_dom(base + "/", profile)
        assert go_of(refused) in section(dom, "refused") and go_of(several) in section(dom, "refused")
        assert go_of(late) in section(dom, "overdue")
        assert go_of(accepted) in section(dom, "recent")
        assert "onerror" in section(dom, "quarantined") and "<img" not in dom  # shown as text, not an image
        assert dom.count('class="bar"') >= 1  # today's bar in the chart
        page = dump_dom(f"{base}/set/{go_of(several)}", profile)
        for worker in ("90042125519", "91020200234"):
            assert worker in section(page, "notifications")
        assert "90373-333" in page and "blocking" in page
        assert "ACRF" in section(page, "acrf") and go_of(several) in page
        found = dump_dom(f"{base}/search?q=91020200234", profile)
        assert go_of(several) in found and go_of(accepted) not in found
        assert go_of(refused) in dump_dom(f"{base}/search?q={json.loads(ticket_of(sftp_dir, refused))}", profile)
        screenshot(base + "/", DOCS / "status-overview.png", profile)
        screenshot(f"{base}/set/{go_of(several)}", DOCS / "status-set.png", profile)
    finally:
        assert daemon.stop() == 0


def ticket_of(spool_root: Path, fi: str) -> str:
    doc = json.loads((spool_root / "spool" / "results" / f"{go_of(fi)}.json").read_text())
    return json.dumps(doc["ticket"])


def section(dom: str, name: str) -> str:
    """Given a page's DOM, return the text of its <section id=name>."""
    m = re.search(rf'<section id="{name}">(.*?)</section>', dom, re.S)
    assert m, f"no section {name}"
    return m.group(1)
