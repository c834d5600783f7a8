"""What the uploading process does per declaration, counted (not timed, so a loaded machine cannot blur it):
`send --once` of N × 2 KB over the loopback sshd (or through the TCP delay proxy) with each tree given in turn;
prints, per declaration, the parent's journal reads, set rows parsed (SetData.from_json), set data written
(SetData.to_json) and asks whether the signing child is done (Forked.done), beside its CPU milliseconds.

Run: python3 bench/count_send.py TREE [TREE ...] [--sets N] [--delay SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import Bench

from tests.fixtures.tcpproxy import TcpProxy

# the relay's CLI with counters around a few methods; the parent reports them at exit (the forked child inherits
# the counters, and exits without reporting: the counts are the uploading parent's)
RUN_COUNTED = """
import atexit, json, resource, sys
from onss_relay.forked import Forked
from onss_relay.journal.model import SetData
from onss_relay.journal.sqlite import SqliteJournal
counts = {"journal_reads": 0, "rows_parsed": 0, "data_written": 0, "child_asked": 0}
def counted(owner, name, key, static=False):
    real = getattr(owner, name)
    def wrapper(*a, **kw):
        counts[key] += 1
        return real(*a, **kw)
    setattr(owner, name, staticmethod(wrapper) if static else wrapper)
counted(SqliteJournal, "_read", "journal_reads")
counted(SetData, "from_json", "rows_parsed", static=True)
counted(SetData, "to_json", "data_written")
counted(Forked, "done", "child_asked")
def report():
    s = resource.getrusage(resource.RUSAGE_SELF)
    sys.stderr.write("COUNTS " + json.dumps(counts | {"cpu_s": s.ru_utime + s.ru_stime}) + "\\n")
atexit.register(report)
from onss_relay.cli import main
sys.exit(main())
"""


def send(b: Bench, tree: str, n: int, delay: float, start: int) -> dict[str, float]:
    """Given the bench, a tree, a set count and a delay each way, send N sets with that tree's relay; return the
    parent's counts and CPU seconds."""
    proxy = TcpProxy(b.sshd.port, delay=delay) if delay else None
    config = b.relay_config(port=proxy.port if proxy else None, name=f"count-{start}")
    b.declarations(config.parent / "spool" / "outbox", n, start=start)
    cmd = [sys.executable, "-P", "-c", RUN_COUNTED, "send", "--once", "--config", str(config), "--log-level", "error"]
    run = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=tree), check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    if proxy:
        proxy.close()
    b.clear_remote()
    counts: dict[str, float] = json.loads(run.stderr.rsplit("COUNTS ", 1)[1])
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.0)
    args = ap.parse_args()
    b = Bench()
    try:
        for i, tree in enumerate(args.trees):
            c = send(b, tree, args.sets, args.delay, 1 + i * args.sets)
            per = ", ".join(f"{k} {v / args.sets:.2f}" for k, v in c.items() if k != "cpu_s")
            print(f"{tree}: per declaration {per}; parent CPU {c['cpu_s'] / args.sets * 1000:.2f} ms")
    finally:
        b.close()


if __name__ == "__main__":
    main()
