"""Sets left *uncertain* by a connection given up with their requests in flight, and how they are decided.

A request sent on a connection can still reach the server after the relay gave that connection up: a stalled
path delivers what it held. So such a set is recorded uncertain (journal data, with the time it was given up
on a clock that a restart cannot reset), nothing more of it is put on any connection during the quiet period
(``remote.quiet_period``), and then the server is read: a set caught while its FI or FS were being put is
sent again whole (only when no GO of it exists), one caught while its GO was being put gets it at most once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

from onss_relay.journal import Change, DataChange, Journal, SetRow, State, Uncertain
from onss_relay.local_time import local_time

log = structlog.get_logger(__name__)

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
UNCERTAIN_STATES = frozenset({State.UPLOADING, State.GO_SENDING})  # the states a set can be uncertain in
SERVER_LOOK = "server look"  # the step of a set in go_sending whose server could not be read to decide its GO


def boot_id() -> str:
    """The kernel's id of this boot ("" where there is none): CLOCK_BOOTTIME values compare within one boot."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME: steady across restarts of the relay, never stepped by NTP, counts suspend."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def new_uncertainty(step: str, quiet: float) -> Uncertain:
    """Given the step whose request was in flight and the quiet period, return the record of a give-up now."""
    return Uncertain(since=time.time(), boottime=boottime(), boot_id=boot_id(), quiet=quiet, step=step)


def quiet_left(u: Uncertain, quiet: float) -> float:
    """Given an uncertainty and the quiet period configured now, return the seconds still to wait (0: decide).

    The longer of the recorded and the configured period applies; after a reboot (another boot id) the time
    elapsed is unknown, and the whole period is counted again from now (see ``restart_after_reboot``).
    """
    period = max(u.quiet, quiet)
    if u.boot_id != boot_id():
        return period
    return max(0.0, period - (boottime() - u.boottime))


def decide_at(u: Uncertain, quiet: float) -> float:
    """Given an uncertainty, return the wall-clock time (time.time()) at which its set will be decided."""
    return time.time() + quiet_left(u, quiet)


def describe(row: SetRow, quiet: float) -> str:
    """Given an uncertain set, one sentence saying why it waits and until when (UTC)."""
    u = row.data.uncertain
    assert u is not None
    when = dt.datetime.fromtimestamp(decide_at(u, quiet), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    since = dt.datetime.fromtimestamp(u.since, dt.UTC).strftime("%H:%M:%S UTC")
    why = why_uncertain(u.step, since)
    if quiet_left(u, quiet) == 0:
        return f"{row.go_name}: uncertain, {why}; its quiet period is over: the next upload round reads the server and finishes it"
    return f"{row.go_name}: uncertain, {why}; nothing more of it is sent until {when}, then the server is read and the set finished"


def why_uncertain(step: str, since: str | None = None) -> str:
    """Why a set is uncertain, from its step and the time it became so (a sentence for one set), or without the
    time (``since`` None: the shorter words of the summary of all uncertain sets)."""
    if step in {str(s) for s in UNCERTAIN_STATES}:
        if since is None:
            return f"{step} when the relay stopped uncleanly"
        return f"it was {step} when the relay stopped uncleanly (found at {since})"
    if step == SERVER_LOOK:
        if since is None:
            return "the server could not be read to decide its GO"
        return f"the server could not be read at {since} to decide whether its GO is needed"
    if since is None:
        return f"its {step} on a connection given up"
    were = "were" if " and " in step else "was"  # "FI and FS": one step since they are put together
    return f"its {step} {were} in flight on a connection given up at {since}"


def uncertain_wait(journal: Journal, quiet: float) -> str | None:
    """Given the journal and the configured quiet period (remote.quiet_period, what the uploader waits: the
    longer of it and the recorded one), return why sets wait out a quiet period (how many, the first, until when
    in local time with the zone), for `status` and systemd's STATUS; None when no set is uncertain."""
    waits = [
        (decide_at(u, quiet), r.go_name, u.step) for r in journal.sets_in(*UNCERTAIN_STATES) if (u := r.data.uncertain)
    ]
    if not waits:
        return None
    until, go_name, step = min(waits)
    how = why_uncertain(step)
    return (
        f"{len(waits)} set(s) uncertain, a request possibly still in flight ({go_name}: {how}); nothing more of"
        f" them is sent until {local_time(until)}, then the server is read"
    )


def mark_uncertain(journal: Journal, steps: dict[str, str], quiet: float, why: str = "") -> None:
    """Given the sets with a request in flight on a connection being given up (GO name → step), record each
    uncertain in one journal commit (sets already moved on, by an answer for instance, are left alone); ``why``
    replaces the default reason (a connection given up) in the log."""
    if not steps:
        return
    changes = []
    for go_name, step in steps.items():
        row = journal.get_set(go_name)
        if row is None or row.state not in UNCERTAIN_STATES:
            continue
        u = new_uncertainty(step, quiet)
        changes.append(
            Change(go_name, row.state, "uncertain", data=DataChange(uncertain=u), only_from=frozenset({row.state}))
        )
    if not changes:
        return
    journal.transition_many(changes)
    for change in changes:  # said once it is recorded: a crash right after the line must not lose what it says
        step = steps[change.go_name]
        log.warning(
            "set_uncertain",
            set=change.go_name,
            state=str(change.state),
            step=step,
            quiet_s=quiet,
            detail=(why or f"a request of its {step} was in flight on a connection given up")
            + "; it waits for the quiet period",
        )


def waiting(rows: Iterable[SetRow], quiet: float) -> list[SetRow]:
    """Given sets, return those uncertain whose quiet period has not passed yet."""
    return [r for r in rows if r.data.uncertain is not None and quiet_left(r.data.uncertain, quiet) > 0]


def restart_after_reboot(journal: Journal, rows: Iterable[SetRow], quiet: float = 0.0) -> None:
    """Given uncertain sets and the quiet period configured now, start the quiet period again for those given up
    in another boot (the time elapsed since is unknown: a wall clock can be wrong after a reboot), so that it is
    counted on this boot's clock; and record a longer configured period, so that status shows the moment the
    uploader keeps."""
    this_boot = boot_id()
    for row in rows:
        u = row.data.uncertain
        if u is not None and u.boot_id != this_boot:
            journal.update_data(row.go_name, DataChange(uncertain=new_uncertainty(u.step, max(u.quiet, quiet))))
        elif u is not None and quiet > u.quiet:
            journal.update_data(row.go_name, DataChange(uncertain=dataclasses.replace(u, quiet=quiet)))
