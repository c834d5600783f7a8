"""monitoring/onss-relay.rules.yml (issue 26): valid for Prometheus (`promtool check rules`), each alert raised
by the series that should raise it and quiet on a healthy relay (`promtool test rules`), and every metric a
rule reads is one the relay exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from onss_relay.config import Config, PollConfig
from onss_relay.journal import open_journal_at
from onss_relay.metrics import HealthSnapshot, RelayCollector, StageFigures, registry_for
from onss_relay.spool import Spool

MONITORING = Path(__file__).resolve().parents[1] / "monitoring"
RULES = MONITORING / "onss-relay.rules.yml"
ALERTS = {
    "OnssRelayDown",
    "OnssRelayUnhealthy",
    "OnssRelayStageFailing",
    "OnssRelayNoGoodPoll",
    "OnssRelayAcrfOverdue",
    "OnssRelayNotificationOverdue",
    "OnssRelayDeclarationRefused",
    "OnssRelayQuarantinedFiles",
    "OnssRelayCertificateExpiring",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("promtool is not installed: .ci/run installs Debian's prometheus package")
    pytest.skip("promtool is not installed (apt-get install prometheus)")


def test_the_rules_are_valid_and_their_unit_tests_pass() -> None:
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool(), "test", "rules", "onss-relay.rules.test.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert set(re.findall(r"alert: (\w+)", RULES.read_text())) == ALERTS
    tested = MONITORING.joinpath("onss-relay.rules.test.yml").read_text()
    assert all(f"alertname: {a}" in tested for a in ALERTS)  # each alert has a case that raises it


def test_every_metric_the_rules_read_is_exported(cfg: Config) -> None:
    journal = open_journal_at(cfg.paths.journal_path)
    snap = HealthSnapshot(True, "ok", (StageFigures("upload", 0, None),))
    spool = Spool(cfg.paths)
    spool.create()
    collector = RelayCollector(journal, lambda: snap, lambda: 100, PollConfig, spool)
    text = registry_for(collector).collect()
    exported = {s.name for family in text for s in family.samples}
    read = set(re.findall(r"\b(onss_relay_\w+)", RULES.read_text()))
    assert read - exported == set(), read - exported
