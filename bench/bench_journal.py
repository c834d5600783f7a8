"""The PostgreSQL journal beside SQLite in the same run: declarations/s sent over loopback sshd by the same relay,
its journal in the spool (SQLite, the baseline) or in a local PostgreSQL server (tests/fixtures/postgres.py).
Each backend runs twice, alternately; the best run of each counts (the machines are shared and noisy).

Run: python3 bench/bench_journal.py [--quick] [--json FILE]   (as root: the server runs as the postgres user)
"""

from __future__ import annotations

import sys

from bench_upload import relay_send
from common import Bench, bench_args, emit, timed

from tests.fixtures.postgres import PgServer


def main() -> None:
    args = bench_args(__doc__)
    n = 300 if args.quick else 1000
    b = Bench()
    server = PgServer()
    rates: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    try:
        for round_ in range(2):
            for backend in ("sqlite", "postgres"):
                b.clear_remote()
                config = b.relay_config(name=f"relay-{backend}-{round_}")
                if backend == "postgres":
                    text = config.read_text()
                    config.write_text(f'{text}\n[journal]\nurl = "{server.new_database()}"\n')
                b.declarations(config.parent / "spool" / "outbox", n, start=1 + round_ * 10000)
                rates[backend].append(n / timed(lambda config=config: relay_send(config)))
    finally:
        server.close()
        b.close()
    sqlite, postgres = max(rates["sqlite"]), max(rates["postgres"])
    emit(
        [
            {
                "name": f"loopback sshd, {n} × 2 KB, PostgreSQL journal, declarations/s",
                "unit": "decl/s",
                "relay": postgres,
                "baseline": sqlite,
                "ratio": postgres / sqlite,
                "baseline_name": "the same relay with its SQLite journal",
            }
        ],
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
