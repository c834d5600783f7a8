"""The ONSS file-name grammar: parse and format names, derive FS/GO names, map environments to folders.

Pure functions over plain values; nothing here touches a disk or a server.
Grammar: ``PP.CCCC.SSSSSS.YYYYMMDD.NNNNN.E[.T[.n]]`` (see shared/ONSS.md).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import enum
import importlib.resources
import re
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache

from onss_relay.errors import InvalidName

MAX_NAME_BYTES = 255
MAX_PARTS = 9  # the part count is one digit (ACRF-114)


class Prefix(enum.StrEnum):
    FI = "FI"  # declaration
    FS = "FS"  # detached signature of an FI
    GO = "GO"  # end-of-transfer marker for a whole set
    TD = "TD"  # cancel marker (empty), set-level like GO
    FO = "FO"  # response
    CO = "CO"  # compressed response


SET_LEVEL_PREFIXES = frozenset({Prefix.GO, Prefix.TD})


class Env(enum.StrEnum):
    R = "R"  # production
    T = "T"  # test (DRS, Dimona, temporary unemployment, single site); for DmfA only a circuit test
    S = "S"  # declaration test (DmfA, "DRS AMI")


ENV_LABEL = {Env.R: "production", Env.T: "test", Env.S: "declaration test"}


UPLOAD_FOLDER = {Env.R: "IN", Env.T: "INTEST", Env.S: "INTEST-S"}
RESPONSE_FOLDER = {Env.R: "OUT", Env.T: "OUTTEST", Env.S: "OUTTEST-S"}
ALL_FOLDERS = tuple(UPLOAD_FOLDER.values()) + tuple(RESPONSE_FOLDER.values())


@dataclasses.dataclass(frozen=True)
class AppCode:
    code: str
    direction: str  # "sent" or "response"
    meaning: str
    # where the ONSS documents list it: {"R": "", "T": "circuit", …}; empty when they do not say
    environments: Mapping[str, str] = dataclasses.field(default_factory=dict)
    name_form: str = "parts"  # "parts": FI.….E.T.n; "plain": FI.….E (DRS)


@cache
def application_codes() -> dict[str, AppCode]:
    """Return the known application codes, read once from the shipped data table."""
    text = importlib.resources.files("onss_relay.data").joinpath("application-codes.tsv").read_text()
    rows = csv.DictReader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
    return {
        r["code"]: AppCode(
            r["code"],
            r["direction"],
            r["meaning"],
            dict((e.split(":") + [""])[:2] for e in r["environments"].split()),
            r["name_form"] or "parts",
        )
        for r in rows
    }


def name_form(app: str) -> str:
    """Given an application code, return the FI name form it uses: "parts" (FI.….E.T.n) or "plain" (FI.….E, the
    DRS declarations in the ONSS documents); "parts" for a code the table does not know."""
    known = application_codes().get(app)
    return known.name_form if known is not None else "parts"


def environment_note(n: Name) -> str | None:
    """Given a name, return what the ONSS documents say against (or about) sending it to its environment:
    not listed there, or only a circuit test there; None when they list it, or do not know the application."""
    app = application_codes().get(n.app)
    if app is None or not app.environments:
        return None
    listed = app.environments
    if n.env.value not in listed:
        where = ", ".join(f"{e} ({ENV_LABEL[Env(e)]})" for e in listed)
        return (
            f"{n.app} is sent to environment {n.env} ({ENV_LABEL[n.env]}), which the ONSS documents do not list"
            f" for it (they list {where}); the transfer point may refuse it"
        )
    if listed[n.env.value] == "circuit":
        return (
            f"{n.app} in environment {n.env} is only a circuit test: the transfer point checks the transfer and"
            " answers with an ACRF, the declaration itself is not handled (no notification follows; use S for a"
            " declaration test)"
        )
    return None


def circuit_test(n: Name) -> bool:
    """Given a name, return True when its environment is only a circuit test for its application (DmfA in T)."""
    app = application_codes().get(n.app)
    return app is not None and app.environments.get(n.env.value) == "circuit"


def circuit_tests() -> tuple[tuple[str, str], ...]:
    """Return (application code, environment) of every circuit test (DmfA in T): the pairs circuit_test is
    True for, so that a journal query can leave those sets out by name and env column."""
    return tuple(
        (code, env)
        for code, app in sorted(application_codes().items())
        for env, how in app.environments.items()
        if how == "circuit"
    )


def sent_application_codes(extra: Iterable[str] = ()) -> frozenset[str]:
    """Return the codes senders send: the shipped table's, plus ``extra`` (watch.extra_application_codes)."""
    return _shipped_sent_codes() | frozenset(extra)


@cache
def _shipped_sent_codes() -> frozenset[str]:
    """The shipped table's codes senders send (asked for each set claimed: made once, as the table is read)."""
    return frozenset(c for c, a in application_codes().items() if a.direction == "sent")


@dataclasses.dataclass(frozen=True, order=True)
class Name:
    """One parsed file name. ``total``/``part`` are both None for legacy names; a GO has only ``total``."""

    prefix: Prefix
    app: str
    sender: str
    date: str  # YYYYMMDD, a real calendar date
    seq: str  # five characters from 0-9 and A-Z, not all zero
    env: Env
    total: int | None = None
    part: int | None = None

    def __str__(self) -> str:
        return format_name(self)

    @property
    def creation_date(self) -> dt.date:
        return _date_of(self.date)

    def with_prefix(self, prefix: Prefix) -> Name:
        return self._with(prefix, self.part)

    def _with(self, prefix: Prefix, part: int | None) -> Name:
        """This name with another prefix and part (what dataclasses.replace gives, at a fifth of its cost: names
        are derived several times per set claimed, signed and sent)."""
        return Name(prefix, self.app, self.sender, self.date, self.seq, self.env, self.total, part)


def _date_of(field: str) -> dt.date:
    """Given a name's YYYYMMDD, return its date (asked of each set at its claim: strptime cost 4.5 us a call);
    anything but eight digits, or a date that does not exist, is strptime's to read or refuse, in its words."""
    if len(field) == 8 and field.isdigit():
        with contextlib.suppress(ValueError):
            return dt.date(int(field[:4]), int(field[4:6]), int(field[6:]))
    return dt.datetime.strptime(field, "%Y%m%d").date()


def format_name(n: Name) -> str:
    """Given a Name, return its file name string."""
    fields = [n.prefix.value, n.app, n.sender, n.date, n.seq, n.env.value]
    if n.total is not None:
        fields.append(str(n.total))
        if n.part is not None:
            fields.append(str(n.part))
    return ".".join(fields)


_APP = re.compile(r"[A-Z0-9]{4}")
_SENDER = re.compile(r"[0-9]{6}")
_DATE = re.compile(r"[0-9]{8}")
_SEQ = re.compile(r"[0-9A-Z]{5}")  # "all alphanumeric characters can be used" (ONSS help pages)
_DIGIT = re.compile(r"[1-9]")
_ALLOWED = re.compile(r"[0-9A-Za-z.]+")  # what _check_characters lets through (ASCII letters, digits, dots)


@lru_cache(maxsize=4096)  # a set's names are parsed by each stage; a Name is immutable
def parse_name(name: str) -> Name:
    """Given a file name, return its Name, or raise InvalidName saying which field is wrong and why."""
    _check_characters(name)
    fields = name.split(".")
    if len(fields) < 6:
        raise InvalidName(
            name,
            "name",
            f"has {len(fields)} dot-separated fields; expected at least 6 (PP.CCCC.SSSSSS.YYYYMMDD.NNNNN.E)",
        )
    prefix = _parse_prefix(name, fields[0])
    app = _parse_app(name, fields[1])
    sender = _parse_sender(name, fields[2])
    date = _parse_date(name, fields[3])
    seq = _parse_seq(name, fields[4])
    env = _parse_env(name, fields[5])
    total, part = _parse_parts(name, prefix, fields[6:])
    return Name(prefix, app, sender, date, seq, env, total, part)


def _check_characters(name: str) -> None:
    if not name:
        raise InvalidName(name, "name", "is empty")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise InvalidName(name[:40] + "…", "name", f"is longer than {MAX_NAME_BYTES} bytes")
    if _ALLOWED.fullmatch(name):  # the usual case, without a look at each character in Python
        return
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "."))})
    if bad:
        shown = ", ".join(repr(c) for c in bad[:5])
        raise InvalidName(name, "name", f"contains characters outside A-Z, 0-9 and '.': {shown}")


def _parse_prefix(name: str, field: str) -> Prefix:
    try:
        return Prefix(field)
    except ValueError:
        known = ", ".join(p.value for p in Prefix)
        raise InvalidName(name, "prefix", f"{field!r} is not one of {known}") from None


def _parse_app(name: str, field: str) -> str:
    if not _APP.fullmatch(field):
        raise InvalidName(name, "application code", f"{field!r} is not 4 upper-case letters or digits", "ACRF-129")
    return field  # unknown codes are valid names: the code table explains, it does not filter


def _parse_sender(name: str, field: str) -> str:
    if not _SENDER.fullmatch(field):
        raise InvalidName(name, "sender number", f"{field!r} is not 6 digits", "ACRF-108")
    return field


def _parse_date(name: str, field: str) -> str:
    if not _DATE.fullmatch(field):
        raise InvalidName(name, "date", f"{field!r} is not 8 digits (YYYYMMDD)", "ACRF-109")
    try:
        dt.date(int(field[:4]), int(field[4:6]), int(field[6:]))  # strptime's check, at a tenth of its cost
    except ValueError:
        raise InvalidName(name, "date", f"{field!r} is not a valid calendar date", "ACRF-110") from None
    return field


def _parse_seq(name: str, field: str) -> str:
    if len(field) != 5:
        raise InvalidName(name, "sequence", f"{field!r} is not 5 characters", "ACRF-112")
    if not _SEQ.fullmatch(field):
        raise InvalidName(name, "sequence", f"{field!r} is not 5 characters from 0-9 and A-Z", "ACRF-367")
    if field == "00000":
        raise InvalidName(name, "sequence", "is zero (00000)", "ACRF-127")
    return field


def _parse_env(name: str, field: str) -> Env:
    try:
        return Env(field)
    except ValueError:
        raise InvalidName(name, "environment", f"{field!r} is not R, T or S", "ACRF-117") from None


def _parse_parts(name: str, prefix: Prefix, rest: list[str]) -> tuple[int | None, int | None]:
    allowed = (0, 1) if prefix in SET_LEVEL_PREFIXES else (0, 2)
    if len(rest) not in allowed:
        shape = "nothing or .T" if prefix in SET_LEVEL_PREFIXES else "nothing or .T.n"
        raise InvalidName(
            name, "part fields", f"{'.'.join(rest)!r} after the environment; a {prefix} name takes {shape}"
        )
    if not rest:
        return None, None
    if not _DIGIT.fullmatch(rest[0]):
        code = "ACRF-116" if rest[0] == "0" else "ACRF-115" if not rest[0].isdigit() else "ACRF-114"
        raise InvalidName(name, "part count", f"{rest[0]!r} is not one digit from 1 to {MAX_PARTS}", code)
    total = int(rest[0])
    if len(rest) == 1:
        return total, None
    if not _DIGIT.fullmatch(rest[1]) or int(rest[1]) > total:
        raise InvalidName(
            name, "part number", f"{rest[1]!r} is not one digit from 1 to the part count {total}", "ACRF-123"
        )
    return total, int(rest[1])


def fs_name_for(fi: Name) -> Name:
    """Given an FI name, return the name of its signature file (same fields, prefix FS)."""
    return fi.with_prefix(Prefix.FS)


def go_name_for(fi: Name) -> Name:
    """Given any part's name, return the GO name closing its set: prefix GO, part number dropped."""
    return fi._with(Prefix.GO, None)


def set_key(n: Name) -> str:
    """Given any name of a set, return the string that identifies the set: its GO name."""
    return format_name(go_name_for(n))


def set_key_of(name: str) -> str | None:
    """Given any file name of a set (GO, FI, FS …), return the set's GO name, or None when it does not parse."""
    try:
        return set_key(parse_name(name))
    except InvalidName:
        return None


def part_names(go: Name, prefix: Prefix = Prefix.FI) -> list[Name]:
    """Given a set's GO name, return the names of every part it announces, in part order."""
    if go.total is None:
        return [go._with(prefix, go.part)]
    return [go._with(prefix, i) for i in range(1, go.total + 1)]


def upload_folder(env: Env) -> str:
    return UPLOAD_FOLDER[env]


def response_folder(env: Env) -> str:
    return RESPONSE_FOLDER[env]


def env_of_upload_folder(folder: str) -> Env | None:
    return next((e for e, f in UPLOAD_FOLDER.items() if f == folder), None)


def group_sets(names: Iterable[Name]) -> dict[str, list[Name]]:
    """Given part names (any mix of sets), return them grouped by set key, each list in part order."""
    groups: dict[str, list[Name]] = {}
    for n in names:
        groups.setdefault(set_key(n), []).append(n)
    for parts in groups.values():
        parts.sort(key=lambda p: p.part or 0)
    return groups


def missing_parts(go: Name, present: Iterable[Name]) -> list[str]:
    """Given a set's GO name and the FI parts present, return the names of the absent parts."""
    have = {format_name(p) for p in present}
    return [name for p in part_names(go) if (name := format_name(p)) not in have]
