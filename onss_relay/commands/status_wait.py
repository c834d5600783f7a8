"""Why sets wait, in words for `status`: the daemon not running, a full disk, the transfer point down since
when and the next try, a stage paused; and times in local time with the zone for people (JSON stays UTC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onss_relay.disk import disk_full
from onss_relay.health import daemon_health, daemon_report
from onss_relay.local_time import local_time
from onss_relay.spool import spool_in_use

REMOTE_STAGES = ("upload", "poll")
UNSENT = ("queued", "signed", "go_sending")  # states of sets the ONSS does not have yet


def why_waiting(root: Path) -> str | None:
    """Given the spool root, return why sets not sent yet wait, or None when the running daemon is working."""
    if (full := disk_full(root)) and spool_in_use(root):
        return full
    healthy, why = daemon_health(root)
    if healthy is None:
        return f"the daemon is {why}; start it (systemctl start onss-relay) or run onss-relay send --once"
    report = daemon_report(root)
    stages: dict[str, dict[str, Any]] = report[0].get("stages", {}) if report else {}
    for name in REMOTE_STAGES:
        stage = stages.get(name) or {}
        if stage.get("consecutive"):
            return (
                f"the transfer point is unreachable since {local_time(stage.get('failing_since'))}"
                f" ({stage.get('consecutive')} attempts): {stage.get('last_error')}; next try at"
                f" {local_time(stage.get('next_try_at'))}"
            )
    return None if healthy else why
