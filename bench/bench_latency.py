"""Latency of a warm daemon over a 20 ms each-way link: a file renamed into the outbox → its GO on the server.

The real daemon (`onss-relay run`, settle = 0) talks to the real sshd through the delay proxy; files are dropped
one at a time, each once the previous GO is on the server. Measured warm (one daemon, 50 files), and after an
idle period (10 minutes; --quick: 90 s, past the 60 s after which the relay used to close its connection) as the
p50 and max of IDLE_DAEMONS samples from one wait: as many daemons, each its own spool and sequence numbers, all
through the same delay proxy to the same sshd, each warmed with a set, idle together, then one file dropped
into each in turn (each measured alone, the others idle). Baseline: what a
client without a kept connection pays, a fresh paramiko connect + put FI, FS, GO per file. The issue's target is
6 round trips (240 ms at 40 ms a round trip); the floor of a set's own requests is 2.5 (FI and FS OPENs together,
their WRITE+FSTAT+CLOSE, then the GO's OPEN creates it: 100 ms; 4.5 while the FS followed the FI), and after an
idle period one more proves the kept connection alive, partly hidden behind claiming and signing.

Run: python3 bench/bench_latency.py [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import Bench, bench_args, emit, lower_is_better

from tests.conftest import fi_name
from tests.fixtures.tcpproxy import TcpProxy
from tests.helpers import Daemon, wait_until

DELAY = 0.020  # seconds each way
TARGET_ROUND_TRIPS = 6  # the issue's
IDLE_DAEMONS = 5  # daemons idle together: the after-idle figure is a p50 of this many sets, from one wait
SEQUENCES_PER_DAEMON = 1000  # each daemon's declarations are numbered from its own thousand: no name is shared


def drop_and_wait(outbox: Path, remote: Path, i: int) -> float:
    """Given the outbox and the server's INTEST folder, rename one declaration in and return the ms until its GO
    is on the server."""
    name = fi_name(i)
    tmp = outbox / f".{name}.tmp"
    tmp.write_bytes(b"<DmfA>" + b"x" * 2030 + b"</DmfA>\r\n")
    go = remote / ("GO" + name[2:-2])
    t0 = time.perf_counter()
    os.rename(tmp, outbox / name)
    wait_until(go.exists, 30, 0.001)
    took = (time.perf_counter() - t0) * 1000
    wait_until(lambda: not (outbox / name).exists(), 30, 0.01)  # recorded sent: the next set comes alone
    time.sleep(0.1)
    return took


def start_daemon(b: Bench, port: int, name: str) -> tuple[Daemon, Path]:
    """Given the proxy's port and a name, start a daemon with its own config and spool; return it and its outbox."""
    config = b.relay_config(port=port, name=name, extra_remote='keepalive = "15s"\n')
    text = config.read_text().replace('interval = "1s"', 'interval = "1h"')  # polling would share the link
    # the default full scan (the tests' 1 s scan would have an idle daemon prove its connection every second or two,
    # so that a set after an idle period often found it proven: not what a daemon does overnight)
    text = text.replace('rescan = "1s"', 'rescan = "60s"')
    config.write_text(text + '[metrics]\nlisten = ""\n')
    outbox = config.parent / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    d = Daemon(config, config.parent / "daemon.log")
    d.start()
    return d, outbox


def daemon_latencies(b: Bench, port: int, n: int, idle: float, start: int) -> tuple[list[float], list[float]]:
    """Given the proxy's port, run IDLE_DAEMONS daemons; return (warm latencies of n files through the first, the
    latency of one file dropped into each after ``idle`` seconds without a set, one daemon after the other)."""
    remote = b.sshd.home / "INTEST"
    daemons: list[tuple[Daemon, Path, int]] = []
    try:
        for k in range(IDLE_DAEMONS):
            d, outbox = start_daemon(b, port, f"relay-latency-{k}")
            daemons.append((d, outbox, start + k * SEQUENCES_PER_DAEMON))
        for _, outbox, first in reversed(daemons):
            drop_and_wait(outbox, remote, first)  # the first set pays the connection
        _, outbox, first = daemons[0]
        warm = [drop_and_wait(outbox, remote, first + 1 + i) for i in range(n)]
        time.sleep(idle)  # then one set into each, as after a quiet night
        after_idle = [drop_and_wait(outbox, remote, first + n + 10) for _, outbox, first in daemons]
    finally:
        for d, _, _ in daemons:
            d.stop()
    return warm, after_idle


def fresh_connection_put(b: Bench, port: int, files: list[Path]) -> list[float]:
    """The baseline: per file, a new paramiko connection putting FI, FS and GO; return ms per file."""
    empty = files[0].parent / "empty"
    empty.write_bytes(b"")
    out = []
    for f in files:
        t0 = time.perf_counter()
        client, sftp = b.sftp_client(port)
        sftp.put(str(f), f"INTEST/{f.name}")
        sftp.put(str(f), f"INTEST/FS{f.name[2:]}")
        sftp.put(str(empty), f"INTEST/GO{f.name[2:-2]}")
        out.append((time.perf_counter() - t0) * 1000)
        client.close()
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main() -> None:
    args = bench_args(__doc__)
    n, idle = (20, 90.0) if args.quick else (50, 600.0)
    b = Bench()
    proxy = TcpProxy(b.sshd.port, delay=DELAY)
    try:
        warm, after_idle = daemon_latencies(b, proxy.port, n, idle, 100)
        base = fresh_connection_put(b, proxy.port, b.declarations(b.root / "latency-baseline", 10, start=7000))
    finally:
        proxy.close()
        b.close()
    target = TARGET_ROUND_TRIPS * 2 * DELAY * 1000
    baseline_name = "fresh paramiko connect + put FI, FS, GO per file"
    idle_name = f"after {idle / 60:g} min idle, {IDLE_DAEMONS} daemons"
    figures = [
        lower_is_better(f"20 ms each way, renamed → GO p50, warm (target {target:.0f})", "ms", pct(warm, 0.5),
                        pct(base, 0.5), baseline_name),
        lower_is_better(f"20 ms each way, renamed → GO p99, warm ({n} files)", "ms", pct(warm, 0.99),
                        pct(base, 0.99), baseline_name),
        lower_is_better(f"20 ms each way, renamed → GO p50 {idle_name}", "ms", pct(after_idle, 0.5),
                        pct(base, 0.5), baseline_name),
        lower_is_better(f"20 ms each way, renamed → GO max {idle_name}", "ms", max(after_idle),
                        pct(base, 0.99), baseline_name),
    ]  # fmt: skip
    emit(figures, args.json)


if __name__ == "__main__":
    main()
