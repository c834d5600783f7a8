"""Whether the relay is healthy, and why: decided here and nowhere else. The running daemon asks
``relay_health`` (stages alive and not failing, a recent good poll, the journal writable, room on the disk) and
writes the answer to <root>/health.json; /healthz, the metrics' gauge and the status page read its snapshot;
`status --health` (the container's HEALTHCHECK), `status` and `check` read the file (``daemon_health``)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onss_relay.config import Config
from onss_relay.disk import disk_full, journal_unwritable
from onss_relay.durable import atomic_write
from onss_relay.spool import spool_holder
from onss_relay.stage_thread import UNHEALTHY_AFTER, Stage

HEALTH_FRESH = 60.0  # seconds: an older report means the daemon is not running
REPORT = "health.json"


@dataclasses.dataclass(frozen=True)
class Health:
    """The relay's health: healthy or not, why in one sentence, and whether the cause is on this machine (its
    journal, its disk: `check` exits 4 for those, 3 for the others)."""

    healthy: bool
    reason: str
    local: bool = False


@dataclasses.dataclass(frozen=True)
class StageFigures:
    name: str
    failures: int
    last_ok: float | None


@dataclasses.dataclass(frozen=True)
class HealthSnapshot:
    """What the daemon tells the outside: healthy or not and why, and each stage's figures."""

    healthy: bool
    reason: str
    stages: tuple[StageFigures, ...]
    leadership: Mapping[str, object] = dataclasses.field(default_factory=dict)  # RelayLock.describe()
    pruned: tuple[tuple[str, int], ...] = ()  # files removed by retention since start, by kind

    def stage(self, name: str) -> StageFigures | None:
        return next((s for s in self.stages if s.name == name), None)


def relay_health(
    cfg: Config, stages: Sequence[Stage], started: float, reloaded_at: float = 0.0, stopping: bool = False
) -> Health:
    """Given the configuration in force, the stage threads, when the daemon started and was last reloaded (the
    poll window counts from either) and whether it is stopping, return its health: the journal writable and
    the disk not full, every stage alive, none failing UNHEALTHY_AFTER times in a row, a good poll within
    3 poll intervals + 30 s, and no stage paused."""
    if why := local_trouble(cfg):
        return Health(False, why, local=True)
    for stage in stages:
        if not stage.is_alive() and not stopping:
            return Health(False, f"stage {stage.health.name} is not running")
    for stage in stages:
        h = stage.health
        if h.consecutive >= UNHEALTHY_AFTER:
            failing = int(time.time() - (h.failing_since or time.time()))
            return Health(False, f"stage {h.name} failing for {failing} s ({h.consecutive} attempts): {h.last_error}")
    poll = next((s.health for s in stages if s.health.name == "poll"), None)
    window = 3 * cfg.poll.interval + 30
    if poll is not None:
        last = max(poll.last_ok or started, reloaded_at)
        if time.time() - last > window:
            why = f": {poll.last_error}" if poll.last_error else ""
            return Health(False, f"no successful poll for {int(time.time() - last)} s{why}")
    for stage in stages:
        if stage.health.paused_until > time.monotonic():
            return Health(False, f"stage {stage.health.name} paused: {stage.health.last_error}")
    return Health(True, "ok")


def local_trouble(cfg: Config) -> str | None:
    """Given the configuration, return why this machine keeps the relay from working (a SQLite journal it cannot
    write, a full disk), or None."""
    unwritable = None if cfg.journal.url else journal_unwritable(cfg.paths.journal_path)
    return unwritable or disk_full(cfg.paths.root)


def snapshot_of(
    health: Health, stages: Sequence[Stage], leadership: Mapping[str, object], pruned: Mapping[str, int]
) -> HealthSnapshot:
    """Given the relay's health, its stages, its leadership and what retention removed, return the snapshot
    /healthz, /metrics and the status page serve."""
    figures = tuple(StageFigures(s.health.name, s.health.failures, s.health.last_ok) for s in stages)
    return HealthSnapshot(health.healthy, health.reason, figures, leadership, tuple(sorted(pruned.items())))


def write_report(root: Path, health: Health | None, stages: Sequence[Stage], leadership: Mapping[str, object]) -> None:
    """Given the spool root, the relay's health (None: stopped), its stages and its leadership, write
    <root>/health.json atomically for the commands that read it; raise OSError when it cannot be written."""
    doc = {
        "at": time.time(),
        "healthy": health.healthy if health else False,
        "reason": health.reason if health else "stopped",
        "local": bool(health and not health.healthy and health.local),  # `check`: exit 4, not 3
        "stopped": health is None,
        "pid": os.getpid(),
        "host": socket.gethostname(),  # the spool is shared by two machines with PostgreSQL: name the writer's
        "leadership": dict(leadership),
        "stages": {s.health.name: dataclasses.asdict(s.health) for s in stages},
    }
    atomic_write(root / REPORT, json.dumps(doc).encode())


def daemon_report(root: Path) -> tuple[dict[str, Any], float] | None:
    """Given a spool root, return the running daemon's last health report and its age in seconds, if any."""
    try:
        doc: dict[str, Any] = json.loads((root / REPORT).read_text())
    except (OSError, ValueError):
        return None
    return doc, time.time() - float(doc.get("at", 0))


def reported(root: Path) -> bool:
    """Given a spool root, return True when a daemon ever wrote its health report there."""
    return (root / REPORT).exists()


def daemon_health(root: Path) -> tuple[bool | None, str]:
    """Given a spool root, the daemon's health in words: (True, why) running and healthy, (False, why) running
    and unhealthy, (None, why) not running (no report, stopped cleanly, or silent for HEALTH_FRESH s)."""
    report = daemon_report(root)
    holder = spool_holder(root)
    if (full := disk_full(root)) and holder:  # it cannot write its report on a full disk
        return False, f"running, {full}"
    if report is None:
        return None, f"not running: no health report at {root / REPORT} (is `onss-relay run` on this spool?)"
    doc, age = report
    if doc.get("stopped"):
        return None, f"not running: the last daemon stopped {int(age)} s ago"
    # its writer is gone (killed, a reboot) or a new one has not reported yet; "?": a holder that could not write its
    # pid in the lock (a full disk at start) is believed. With PostgreSQL the leadership is in the database, not in
    # the spool's lock file, and the leader may run on the other machine: its report's freshness decides.
    in_database = (doc.get("leadership") or {}).get("backend") == "postgresql"
    if not in_database and holder != "?" and str(doc.get("pid")) != holder:
        who = f"pid {holder} holds the spool and has not reported yet" if holder else "no relay holds the spool"
        return None, f"not running: {who}; the last report, {int(age)} s old, is from a process that has ended"
    if age > HEALTH_FRESH:
        return None, f"not running: pid {doc.get('pid')} last reported {int(age)} s ago"
    who = f"{doc['host']} pid {doc.get('pid')}" if doc.get("host") else f"pid {doc.get('pid')}"
    return bool(doc.get("healthy")), f"{who} reports: {doc.get('reason')}{leader_words(doc)}"


def leader_words(doc: dict[str, Any]) -> str:
    """Given a health report, return how its relay leads (PostgreSQL: "; leader, epoch 3"), "" for a flock."""
    lead = doc.get("leadership") or {}
    if lead.get("backend") != "postgresql":
        return ""
    return f"; leader, epoch {lead.get('epoch')}" if lead.get("leader") else "; not the leader"
