"""Test data for issue 29: grow a real journal to a year of history by cloning its answered sets.

Each clone is a set of an earlier day (a new GO name, a new ticket) with the same data, history, keys and
responses as the set it copies: what `status` and the daemon meet after a year of a social secretariat.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

DAY = 86400.0
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def base36(n: int, width: int = 5) -> str:
    out = ""
    for _ in range(width):
        n, r = divmod(n, 36)
        out = ALPHABET[r] + out
    return out


def grow(journal: Path, total: int, days: int = 365, batch: int = 5000) -> int:
    """Given a journal holding answered sets, add clones of them until it holds ``total`` sets, spread over the
    ``days`` before now; return how many were added."""
    db = sqlite3.connect(journal)
    db.row_factory = sqlite3.Row
    templates = [dict(r) for r in db.execute("SELECT * FROM sets WHERE state IN ('acknowledged', 'notified')")]
    if not templates:
        raise SystemExit(f"{journal}: no answered set to clone")
    history = {
        t["go_name"]: [dict(h) for h in db.execute("SELECT * FROM history WHERE go_name = ?", (t["go_name"],))]
        for t in templates
    }
    have = db.execute("SELECT COUNT(*) FROM sets").fetchone()[0]
    change = db.execute("SELECT COALESCE(MAX(change_seq), 0) FROM sets").fetchone()[0]
    now = time.time()
    added = 0
    per_day = max(1, (total - have) // days + 1)
    while have + added < total:
        rows, hist, keys = [], [], []
        for _ in range(min(batch, total - have - added)):
            i = added
            t = templates[i % len(templates)]
            day = days - i // per_day  # oldest first
            at = now - day * DAY + (i % per_day)
            date = time.strftime("%Y%m%d", time.gmtime(at))
            parts = t["go_name"].split(".")
            parts[3], parts[4] = date, base36(i % per_day + 1)
            go = ".".join(parts)
            ticket = f"9{base36(i, 12)}"
            data = t["data"].replace(t["go_name"], go)
            if t["ticket"]:
                data = data.replace(t["ticket"], ticket)
            change += 1
            rows.append(
                (
                    go,
                    t["env"],
                    t["state"],
                    t["parts"].replace(t["go_name"][3:], go[3:]),
                    at,
                    at + 600,
                    t["reason"],
                    ticket,
                    data,
                    1,
                    change,
                    t["outcome"],
                )
            )
            hist += [(go, h["state"], at + k, h["detail"]) for k, h in enumerate(history[t["go_name"]])]
            keys.append(("ticket", ticket, go))
            added += 1
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO sets (go_name, env, state, parts, created_at, updated_at, reason, ticket, data,"
            " archived, change_seq, outcome) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        db.executemany("INSERT INTO history (go_name, state, at, detail) VALUES (?,?,?,?)", hist)
        db.executemany("INSERT OR IGNORE INTO set_keys (kind, value, go_name) VALUES (?,?,?)", keys)
        db.execute("COMMIT")
    db.close()
    return added
