"""Why outbox files are not claimed yet, per set, for `status`: the parts its GO name announces that are not
there (named), a full disk or no relay running (nothing is claimed then), or settling and still being written (the daemon's settle time; a writer that has not closed it)."""

from __future__ import annotations

import dataclasses

from onss_relay.errors import InvalidName
from onss_relay.names import Name, Prefix, go_name_for, missing_parts, parse_name, set_key


@dataclasses.dataclass(frozen=True)
class ClaimBlock:
    """Why nothing in the outbox is claimed now: no relay running (why), the spool's disk full (the sentence)."""

    not_running: str | None = None
    disk_full: str | None = None
    settle: float | None = None  # watch.settle and watch.settle_unknown, seconds, to say how long settling lasts
    settle_unknown: float | None = None


def unclaimed_reasons(names: list[str], block: ClaimBlock | None = None) -> dict[str, str]:
    """Given the names of the outbox files not claimed yet and what keeps the relay from claiming, return for
    each why it waits: the parts its set still lacks, the full disk, no relay running, or that it
    settles (or is still written); a name that is no declaration's is quarantined by the next scan."""
    block = block or ClaimBlock()
    parsed: dict[str, Name] = {}
    for name in names:
        try:
            parsed[name] = parse_name(name)
        except InvalidName:
            continue
    fis: dict[str, list[Name]] = {}
    for part in parsed.values():
        if part.prefix == Prefix.FI:
            fis.setdefault(set_key(part), []).append(part)
    idle = f"; no relay is running ({block.not_running})" if block.not_running else ""
    reasons: dict[str, str] = {}
    for name in names:
        n = parsed.get(name)
        if n is None:
            when = "when the relay runs" if block.not_running else "at the next scan"
            reasons[name] = f"not a declaration file name: quarantined {when}{idle}"
            continue
        reasons[name] = _set_reason(n, fis.get(set_key(n), []), block) + idle
    return reasons


def _set_reason(n: Name, fis: list[Name], block: ClaimBlock) -> str:
    """Given a file's parsed name, its set's FI parts present and what blocks claims (the relay writes the GO),
    return why the file waits (without the no-relay suffix)."""
    absent = missing_parts(go_name_for(n), fis)
    if absent:
        return f"waiting for part(s) {', '.join(absent)} of {set_key(n)}"
    if block.disk_full:
        return block.disk_full
    if block.not_running:
        return "complete: claimed when the relay runs"
    if block.settle is None or block.settle_unknown is None:
        return "settling, or still being written, or behind earlier sets (claimed a page at a time)"
    return (
        f"settling: claimed once unchanged for watch.settle ({block.settle:g} s) after its writer closed it, or for"
        f" watch.settle_unknown ({block.settle_unknown:g} s) when the relay did not see it written (there before"
        " the watch began); or still being written; or, in a large outbox, behind earlier sets (claimed a page"
        " at a time)"
    )
