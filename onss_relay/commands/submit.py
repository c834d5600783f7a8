"""`onss-relay submit`: name declaration files with the next free sequence number and place them in the outbox.

Each application's name form comes from the data table: FI.….E.T.n (Dimona, DmfA …) or FI.….E (DRS).

The number is reserved in the journal inside one write transaction, so concurrent submits never share one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from pathlib import Path

from onss_relay.config import Config
from onss_relay.durable import fsync_dir, temp_name
from onss_relay.errors import InvalidName, RelayError, UsageError
from onss_relay.journal import open_journal
from onss_relay.names import (
    MAX_PARTS,
    Env,
    Name,
    Prefix,
    format_name,
    name_form,
    parse_name,
    sent_application_codes,
)
from onss_relay.spool import Spool


def submit(cfg: Config, files: list[Path], app: str, env: str, date: str | None, parts: bool) -> list[str]:
    """Given content files, name them (one set, or one set each) and place them in the outbox; return the names."""
    app = app.upper()
    known = sent_application_codes(cfg.watch.extra_application_codes)
    if app not in known:
        raise UsageError(
            f"--app {app}: not an application code senders send ({', '.join(sorted(known))});"
            " a new one can be added with watch.extra_application_codes"
        )
    if env not in cfg.watch.environments:
        raise UsageError(f"--env {env}: not in watch.environments of {cfg.source}")
    date = date or dt.date.today().strftime("%Y%m%d")
    try:
        parse_name(f"FI.{app}.{cfg.sender.number}.{date}.00001.{env}.1.1")
    except InvalidName as e:
        raise UsageError(f"--date {date}: {e.why}") from None
    if dt.datetime.strptime(date, "%Y%m%d").date() > dt.date.today():
        raise UsageError(f"--date {date}: a declaration cannot be dated in the future (ACRF-111)")
    _check_files(files, app, parts)
    plain = name_form(app) == "plain"
    spool = Spool(cfg.paths)
    spool.create()
    journal = open_journal(cfg)
    try:
        groups = [files] if parts else [[f] for f in files]
        names: list[str] = []
        for group in groups:
            seq = journal.allocate_sequence(
                cfg.sender.number, date, env, _taken_here(spool, cfg.sender.number, date, env)
            )
            total = None if plain else len(group)
            first = Name(Prefix.FI, app, cfg.sender.number, date, f"{seq:05d}", Env(env), total, total and 1)
            names += _place(spool, group, first)
        return names
    finally:
        journal.close()


def _check_files(files: list[Path], app: str, parts: bool) -> None:
    """Given the content files and whether they are the parts of one set, raise UsageError when they cannot be
    submitted: missing, empty, too many parts, or parts for an application whose names have none."""
    for f in files:
        if not f.is_file():
            raise UsageError(f"{f}: no such file")
        if f.stat().st_size == 0:
            raise UsageError(f"{f}: the file is empty; an empty declaration would be refused")
    if parts and name_form(app) == "plain":
        raise UsageError(
            f"--parts: {app} names have no part fields (FI.{app}.SSSSSS.YYYYMMDD.NNNNN.E, as the ONSS documents"
            " give them); submit one file per declaration"
        )
    if parts and len(files) > MAX_PARTS:
        raise UsageError(f"--parts: {len(files)} files, but a set has at most {MAX_PARTS} parts")


def _taken_here(spool: Spool, sender: str, date: str, env: str) -> set[int]:
    """Given the spool, return the numeric sequences of sender+date+env that its files use, whatever their
    application code: in the outbox, and in sent/ (a journal lost or restored from an old backup must not
    hand a sent sequence out again: ACRF-133). Files dated D are archived on day D or later, so only those
    sent/ folders are read; their names are matched, not parsed (a day of a secretariat's volume holds tens of
    thousands), and a name of that day that only looks valid counts as taken."""
    since = (dt.datetime.strptime(date, "%Y%m%d").date() - dt.timedelta(days=1)).isoformat()
    folders = [spool.outbox] + sorted(d for d in spool.sent.glob("????-??-??") if d.is_dir() and d.name >= since)
    of_the_day = re.compile(rf"\.?[A-Z]{{2}}\.[A-Z0-9]{{4}}\.{sender}\.{date}\.([0-9]{{5}})\.{env}(?:\.|$)")
    taken = set()
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if m := of_the_day.match(entry.name):
                    taken.add(int(m.group(1)))
    return taken


def _place(spool: Spool, files: list[Path], first: Name) -> list[str]:
    """Given the files of one set and its first part's name (without part fields for a name form that has
    none), write every part under a temp name first, then link them in under their names, never over a file
    of that name (one dropped by hand at the same moment): the watcher never sees half a file, and a taken
    name leaves that file as it is, places none of the set and raises RelayError naming it."""
    staged = []
    try:
        for i, src in enumerate(files, start=1):
            name = format_name(first if first.total is None else dataclasses.replace(first, total=len(files), part=i))
            temp = spool.outbox / temp_name(name)  # this process's own: removed at a start if it is killed
            staged.append((temp, spool.outbox / name, src))
            with src.open("rb") as fin, temp.open("wb") as fout:
                while chunk := fin.read(1 << 20):
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        _link_all([(temp, final) for temp, final, _ in staged], files)
    finally:
        for temp, _, _ in staged:
            temp.unlink(missing_ok=True)
    fsync_dir(spool.outbox)
    return [final.name for _, final, _ in staged]


def _link_all(staged: list[tuple[Path, Path]], files: list[Path]) -> None:
    """Given (temp, final) pairs and the content files, hard-link each temp to its final name (which fails
    rather than replace a file); when a name is taken, unlink the parts already linked and raise RelayError."""
    linked: list[tuple[Path, Path]] = []
    for (temp, final), src in zip(staged, files, strict=True):
        try:
            os.link(temp, final)
        except FileExistsError:
            for t, f in linked:
                if os.path.samefile(t, f):  # ours, not a file put there since
                    f.unlink()
            raise RelayError(
                f"{final}: a file of that name is already in the outbox (put there meanwhile); it was left as it"
                f" is and {src} was not placed{' (nor the other parts of its set)' * (len(staged) > 1)}:"
                " submit it again for the next free number"
            ) from None
        linked.append((temp, final))
