"""Health in one module (issue 26): health.py decides whether the relay is healthy and why, writes and reads
health.json; the daemon, /healthz, the metrics, `status --health` and `check` only ask it."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import onss_relay
from onss_relay.config import Config
from onss_relay.health import Health, daemon_health, relay_health, snapshot_of, write_report
from onss_relay.stage_thread import StageHealth

PACKAGE = Path(onss_relay.__file__).parent


class StageSeen:
    """A stage thread as health.py sees it: alive or not, and its figures."""

    def __init__(self, health: StageHealth, alive: bool = True) -> None:
        self.health, self.alive = health, alive

    def is_alive(self) -> bool:
        return self.alive


def test_only_the_health_module_names_the_health_report() -> None:
    """No other module reads or writes health.json by its name: one place decides and keeps the report."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "health.py":
            continue
        names = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
        assert "health.json" not in names, f"{path.relative_to(PACKAGE)} names health.json"


def test_the_relay_health_says_why_and_the_report_says_the_same(cfg: Config) -> None:
    """A stage failing 3 times in a row makes the relay unhealthy with its error; a dead stage and an old poll
    too; written as the report, `status --health`'s reader says the same reason."""
    cfg.paths.root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    polling = StageHealth("poll", last_ok=now)
    failing = StageHealth("upload", last_error="connection refused", consecutive=3, failing_since=now - 40)
    stages = [StageSeen(polling), StageSeen(failing)]
    health = relay_health(cfg, stages, started=now)  # type: ignore[arg-type]
    assert not health.healthy and not health.local
    assert health.reason.startswith("stage upload failing for") and "(3 attempts): connection refused" in health.reason
    assert relay_health(cfg, [StageSeen(polling)], started=now) == Health(True, "ok")  # type: ignore[arg-type]
    dead = relay_health(cfg, [StageSeen(polling, alive=False)], started=now)  # type: ignore[arg-type]
    assert dead == Health(False, "stage poll is not running")
    quiet = relay_health(cfg, [StageSeen(StageHealth("poll"))], started=now - 10_000)  # type: ignore[arg-type]
    assert not quiet.healthy and quiet.reason.startswith("no successful poll for")
    snap = snapshot_of(health, stages, {"backend": "sqlite"}, {"results": 2})  # type: ignore[arg-type]
    assert (snap.healthy, snap.reason, snap.stage("upload")) == (False, health.reason, snap.stages[1])
    write_report(cfg.paths.root, health, stages, {"backend": "postgresql", "leader": True, "epoch": 3})  # type: ignore[arg-type]
    healthy, why = daemon_health(cfg.paths.root)
    assert healthy is False and why.endswith(f"reports: {health.reason}; leader, epoch 3"), why
    write_report(cfg.paths.root, None, stages, {})  # type: ignore[arg-type]
    assert daemon_health(cfg.paths.root)[0] is None  # stopped: not running
