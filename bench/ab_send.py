"""Two checkouts of the relay side by side: `send --once` (a CLI process) of N × 2 KB over the loopback sshd, or
through the TCP delay proxy, each tree in turn, best of ROUNDS; prints decl/s, CPU ms and wall ms per declaration.

Run: python3 bench/ab_send.py BEFORE_TREE AFTER_TREE [--sets N] [--delay SECONDS] [--rounds R]
     (a tree: a checkout's root, e.g. `git archive 06b62df | tar -x -C /tmp/before`)
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

from common import Bench

from tests.fixtures.tcpproxy import TcpProxy

# the relay's CLI, reporting at exit its own CPU (the parent: uploading) and its waited-for children's (the forked
# child: claiming and signing), so that the bottleneck process shows
RUN_WITH_RUSAGE = """
import atexit, resource, sys
import onss_relay
def report():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stderr.write(f"RUSAGE {s.ru_utime} {s.ru_stime} {c.ru_utime + c.ru_stime} {onss_relay.__file__}\\n")
atexit.register(report)
from onss_relay.cli import main
sys.exit(main())
"""


def send(b: Bench, tree: str, n: int, delay: float, tag: str, start: int) -> float:
    """Given the bench, a tree, a set count and a delay each way, send N sets with that tree's relay; return
    declarations/s (and print CPU and wall milliseconds per declaration)."""
    proxy = TcpProxy(b.sshd.port, delay=delay) if delay else None
    config = b.relay_config(port=proxy.port if proxy else None, name=f"ab-{tag}")
    b.declarations(config.parent / "spool" / "outbox", n, start=start)
    cmd = [
        sys.executable,
        "-P",
        "-c",
        RUN_WITH_RUSAGE,
        "send",
        "--once",
        "--config",
        str(config),
        "--log-level",
        "error",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=tree), check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    user_s, sys_s, child_s, loaded = run.stderr.rsplit("RUSAGE ", 1)[1].split()
    user, system, child = float(user_s), float(sys_s), float(child_s)
    parent = user + system
    # python -c puts the current folder first on sys.path: -P keeps it off, and this checks the tree ran
    assert os.path.realpath(loaded).startswith(os.path.realpath(tree)), f"{tag} ran {loaded}, not {tree}"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if proxy:
        proxy.close()
    # the remote files stay (each round has its own names): thousands deleted would make the next round's file
    # creations pay ext4's scan past recently deleted inodes (kernel CPU in both relay processes, 2-5x this run's)
    print(f"{tag}: {n / wall:.1f} decl/s, cpu {cpu / n * 1000:.2f} ms/decl (uploading parent {parent / n * 1000:.2f}: "
          f"user {user / n * 1000:.2f} sys {system / n * 1000:.2f}, "
          f"claiming and signing child {child / n * 1000:.2f}), wall {wall / n * 1000:.2f} ms/decl")  # fmt: skip
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    b = Bench()
    best = {"before": 0.0, "after": 0.0}
    try:
        for r in range(args.rounds):
            for i, (which, tree) in enumerate((("before", args.before), ("after", args.after))):
                rate = send(b, tree, args.sets, args.delay, f"{which}{r}", 1 + (2 * r + i) * args.sets)
                best[which] = max(best[which], rate)
    finally:
        b.close()
    print(f"best: before {best['before']:.1f}, after {best['after']:.1f} decl/s: {best['after'] / best['before']:.2f}×")


if __name__ == "__main__":
    main()
