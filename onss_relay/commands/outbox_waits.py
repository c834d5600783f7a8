"""Why outbox files are not claimed yet, per set, for `status`: the parts its GO name announces that are not
there (named), or settling and still being written (the daemon's settle time; a writer that has not closed it)."""

from __future__ import annotations

from onss_relay.errors import InvalidName
from onss_relay.names import Name, Prefix, go_name_for, missing_parts, parse_name, set_key


def unclaimed_reasons(names: list[str]) -> dict[str, str]:
    """Given the names of the outbox files not claimed yet, return for each why it waits: the parts its set still
    lacks, or that it settles (or is still written, or is about to be quarantined)."""
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
    reasons: dict[str, str] = {}
    for name in names:
        n = parsed.get(name)
        if n is None:
            reasons[name] = "not a declaration file name: quarantined at the next scan"
            continue
        absent = missing_parts(go_name_for(n), fis.get(set_key(n), []))
        reasons[name] = (
            f"waiting for part(s) {', '.join(absent)} of {set_key(n)}" if absent else "settling, or still being written"
        )
    return reasons
