"""CPU per declaration, per process, the server's included: `send --once` of N × 2 KB run in this process (as
bench_upload does) over the loopback sshd or the 20 ms proxy; prints decl/s, the relay parent's CPU (user, sys),
its forked claim-and-sign child's (reaped), and every other process's CPU over the run from /proc (sshd and
sftp-server, the proxy, kernel threads, and whatever else the machine ran meanwhile: the noise, named).

Run: python3 bench/cpu_split.py [--sets N] [--delay SECONDS] [--rounds R]
"""

from __future__ import annotations

import argparse
import collections
import os
import time

from common import Bench, DelayProxy

from onss_relay.config import load_config
from onss_relay.log import setup_logging
from onss_relay.pipeline import Relay

TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[str, int]]:
    """Every process now: pid -> (name, CPU ticks of its own and of its reaped children)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115, PTH123
        except OSError:
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        out[int(pid)] = (name, sum(int(f) for f in fields[11:15]))
    return out


def one_round(b: Bench, n: int, delay: float, tag: str) -> None:
    """Given the bench, a set count, a delay each way and a tag, send N sets and print where the CPU went."""
    b.clear_remote()
    proxy = DelayProxy(b.sshd.port, delay) if delay else None
    config = b.relay_config(port=proxy.port if proxy else None, name=f"cpu-{tag}")
    b.declarations(config.parent / "spool" / "outbox", n)
    before, mine = processes(), os.times()
    t0 = time.perf_counter()
    relay = Relay(load_config(config, environ={}))
    try:
        relay.send_once(wait_for_settle=False)
    finally:
        relay.close()
    wall = time.perf_counter() - t0
    after, done = processes(), os.times()
    if proxy:
        proxy.close()
    per = 1000 / n
    parent = (done.user - mine.user) * per, (done.system - mine.system) * per
    child = (done.children_user - mine.children_user + done.children_system - mine.children_system) * per
    print(f"{n} sets, {delay * 1000:.0f} ms each way: {n / wall:.1f} decl/s; CPU ms per declaration: relay parent "
          f"{sum(parent):.2f} (user {parent[0]:.2f}, sys {parent[1]:.2f}), claim-and-sign child {child:.2f}")  # fmt: skip
    others: dict[str, float] = collections.Counter()
    for pid, (name, ticks) in after.items():
        old_name, old = before.get(pid, (name, 0))
        if pid != os.getpid() and old_name == name and ticks > old:
            others[name] += (ticks - old) / TICK * per
    print("  others: " + ", ".join(f"{name} {ms:.2f}" for name, ms in others.most_common(6) if ms >= 0.01))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    setup_logging("error")
    b = Bench()
    try:
        for r in range(args.rounds):
            one_round(b, args.sets, args.delay, str(r))
    finally:
        b.close()


if __name__ == "__main__":
    main()
