"""Status page overview render time with a large journal (100,000 sets; --quick: 10,000), spread over 60 days
and every outcome, a few hundred refused, overdue and quarantined among them. Baseline: what `status --json`
computes over the same journal (its default 200 sets, in the same process), the plain machine-readable view.

Run: python3 bench/bench_page.py [--quick] [--json FILE]
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from common import BENCH_DIR, SENDER, bench_args, emit, lower_is_better

from onss_relay.commands.status import status_json
from onss_relay.config import PollConfig
from onss_relay.journal import NewSet, SetData, open_journal_at
from onss_relay.metrics import HealthSnapshot, StageFigures
from onss_relay.spool import Spool
from onss_relay.status_page.routes import routes
from onss_relay.views.overview import _charts
from onss_relay.views.sources import Sources
from onss_relay.web import Request
from tests.conftest import write_config

OUTCOMES = ["accepted"] * 80 + ["accepted_with_anomalies"] * 10 + ["partly_refused", "refused"] + ["pending"] * 8
STATES = {"accepted": "notified", "accepted_with_anomalies": "notified", "partly_refused": "notified"}


def fill(journal_path: Path, n: int) -> None:
    """Given a journal path and a count, add n sets spread over 60 days with outcomes and states."""
    journal = open_journal_at(journal_path)
    rng = random.Random(26)
    now = time.time()
    batch: list[NewSet] = []
    for i in range(n):
        day = dt_name(now - rng.uniform(0, 60 * 86400))
        go = f"GO.DIMN.{SENDER}.{day}.{i % 99999:05d}.R.{1 + i // 99999}"
        batch.append(NewSet(go, "R", [go.replace("GO.", "FI.", 1) + ".1"], SetData()))
        if len(batch) == 5000:
            journal.add_sets(batch)
            batch = []
    journal.add_sets(batch)
    db = journal._db  # type: ignore[attr-defined]  # the bench sets states directly: 100,000 transitions are slow
    rows = db.execute("SELECT go_name FROM sets").fetchall()
    db.execute("BEGIN")
    for (go,) in rows:
        outcome = rng.choice(OUTCOMES)
        state = STATES.get(outcome, "refused" if outcome == "refused" else rng.choice(["sent", "acknowledged"]))
        at = now - rng.uniform(0, 60 * 86400)
        db.execute(
            "UPDATE sets SET state = ?, outcome = ?, created_at = ?, updated_at = ? WHERE go_name = ?",
            (state, outcome, at, at + 60, go),
        )
    db.execute("COMMIT")
    journal.close()


def dt_name(at: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(at))


def median_ms(fn: object, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    args = bench_args(__doc__)
    n = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="onss-bench-page-", dir=BENCH_DIR) as d:
        root = Path(d)
        from onss_relay.config import load_config

        cfg = load_config(write_config(root), environ={})
        fill(cfg.paths.journal_path, n)
        spool = Spool(cfg.paths)
        journal = open_journal_at(cfg.paths.journal_path)
        snap = HealthSnapshot(True, "ok", tuple(StageFigures(s, 0, time.time()) for s in ("sign", "upload", "poll")))
        src = Sources(journal, spool, PollConfig, lambda: snap, lambda: 300)
        overview = routes(src)["/"].answer
        size = len(overview(Request("/", "", {})).body)
        page_ms = median_ms(lambda: overview(Request("/", "", {})))  # the 30-day chart reused (CHART_FRESH)

        def cold() -> None:
            _charts.clear()
            overview(Request("/", "", {}))

        cold_ms = median_ms(cold)
        json_ms = median_ms(lambda: json.dumps(status_json(journal, poll=PollConfig())))
        journal.close()
    print(f"journal of {n} sets; overview page {size // 1024} KiB")
    emit(
        [
            lower_is_better(f"status page overview, {n} sets", "ms", page_ms, json_ms, "status --json, same journal"),
            lower_is_better(
                f"status page overview, chart recounted, {n} sets",
                "ms",
                cold_ms,
                json_ms,
                "status --json, same journal",
            ),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
