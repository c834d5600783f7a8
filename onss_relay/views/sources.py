"""Where the views read from: the journal, the spool, the configuration in force and the daemon's health."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from onss_relay.config import PollConfig
from onss_relay.health import HealthSnapshot
from onss_relay.journal import Journal
from onss_relay.spool import Spool


@dataclasses.dataclass(frozen=True)
class Sources:
    """What a view may read; every field is read-only for it. ``days_left`` raises when the certificate cannot
    be read."""

    journal: Journal
    spool: Spool
    poll: Callable[[], PollConfig]
    snapshot: Callable[[], HealthSnapshot]
    days_left: Callable[[], int]
