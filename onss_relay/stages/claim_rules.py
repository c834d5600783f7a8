"""What the claim decides about one set from its names and files alone: whether it may be sent (sender,
environment, date, application code), what the ONSS documents say against it (warnings), the keys its answers
are found by, and what to tell of files named like a set already sent. No scanning, no journal writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import structlog

from onss_relay.config import Config
from onss_relay.declaration import declaration_warnings
from onss_relay.declaration_keys import declaration_keys
from onss_relay.journal import NewSet, SetRow
from onss_relay.local_time import local_time
from onss_relay.names import Name, parse_name, sent_application_codes
from onss_relay.spool import file_digest
from onss_relay.stages.same_content import CONTENT_KEY

log = structlog.get_logger(__name__)


def refusal(cfg: Config, go: Name) -> tuple[str, str] | None:
    """Given the configuration and a complete set's GO name, return (reason, detail) when it must not be sent,
    else None."""
    if go.sender != cfg.sender.number:
        return (
            "wrong sender number, would be ACRF-108",
            f"{go}: sender {go.sender} is not the configured sender.number {cfg.sender.number}",
        )
    if go.env.value not in cfg.watch.environments:
        return ("environment not allowed", f"{go}: environment {go.env} is not in watch.environments")
    if go.creation_date > latest_plausible_today():
        return ("date in the future, would be ACRF-111", f"{go}: date {go.date} is after today")
    if go.app not in sent_application_codes(cfg.watch.extra_application_codes):
        return ("not a code senders send", f"{go}: {go.app} is a response-only application code")
    return None


def with_keys(new: NewSet, parts: list[Path]) -> NewSet:
    """Given a set about to be claimed and its FI files, return it with the keys answers and later drops find it
    by: each Form's identification in every part and the sender's reference (answers without a FileReference), and its
    content digest (the same declaration dropped twice)."""
    keys = declaration_keys(*parts)
    if new.data.content:
        keys = (*keys, (CONTENT_KEY, new.data.content))
    return dataclasses.replace(new, keys=keys)


def with_warnings(new: NewSet, parts: list[Path]) -> NewSet:
    """Given a set about to be claimed and its FI files, return it carrying (and log) what the ONSS documents
    say against it: reported in its result, never a refusal. An unreadable file is the sign stage's to report."""
    try:
        warnings = declaration_warnings(parse_name(new.go_name), parts)
    except OSError:
        return new
    except Exception as e:  # a report must never stop the claim: say it could not be made, send the set
        log.exception("declaration_check_failed", set=new.go_name)
        warnings = (f"{new.go_name}: its encoding could not be checked ({type(e).__name__}: {e})",)
    for warning in warnings:
        log.warning("declaration_warning", set=new.go_name, warning=warning)
    return dataclasses.replace(new, data=dataclasses.replace(new.data, warnings=warnings)) if warnings else new


def sent_before(key: str, fis: dict[str, Path], row: SetRow) -> str:
    """Given a set's GO name, its FI files by name and the journal's row of the set already sent under that
    name, say so, and what the ONSS got if they are a later version of that set's files (a writer that
    appended after the relay sent and released the original)."""
    when = local_time(row.created_at)
    again = sorted(n for n in fis if n in row.data.digests)
    if not again:
        return f"{key} was already sent on {when}"
    differ = [n for n in again if _digest_or_none(fis[n], row.data.digests[n]) != row.data.digests[n]]
    if not differ:
        return f"{key} was already sent on {when}: {', '.join(again)} holds the same bytes as sent on {when}"
    return (
        f"{key} was already sent on {when}: {', '.join(differ)} has different content from what was sent, "
        f"and the ONSS got the earlier version (in {row.data.sent_dir}); this content was not sent"
    )


def _digest_or_none(path: Path, recorded: str) -> str | None:
    """Given a file and a recorded "algorithm:hex", return the file's digest the same way (None if unreadable)."""
    try:
        return file_digest(path, recorded.partition(":")[0])
    except OSError:
        return None


def latest_plausible_today() -> dt.date:
    """Return the latest date a sender may put in a name today: the machine's, or Belgium's when it is ahead.

    Containers often run on UTC while payroll systems date files in Belgian time (UTC+1/+2): between midnight
    in Brussels and midnight UTC a correct file would otherwise look dated in the future.
    """
    belgium = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).date()
    return max(dt.date.today(), belgium)
