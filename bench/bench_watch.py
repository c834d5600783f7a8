"""Watcher: file settled → claimed latency (p50/p99) with settle = 0, inotify vs the polling observer;
peak RSS of `onss-relay run` with 10,000 sets waiting in the outbox, inotify vs polling.

Run: python3 bench/bench_watch.py [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import REPO, bench_args, emit, lower_is_better, world

from onss_relay import identity
from onss_relay.config import load_config
from onss_relay.daemon import Daemon
from onss_relay.journal import open_journal_at
from tests.conftest import SIGNING_PASSWORD, fi_name, write_config
from tests.helpers import wait_until


def make_relay_dir(root: Path, polling: str) -> Path:
    root.mkdir(parents=True)
    identity.self_signed_identity(root / "keys", "bench", password=SIGNING_PASSWORD.encode())
    (root / "keys" / "signer.pass").write_text(SIGNING_PASSWORD)
    (root / "remote").mkdir()
    for f in ("IN", "INTEST", "INTEST-S", "OUT", "OUTTEST", "OUTTEST-S"):
        (root / "remote" / f).mkdir()
    write_config(root, '[metrics]\nlisten = ""\n')
    text = (root / "config.toml").read_text().replace('settle = "0s"', f'settle = "0s"\npolling = "{polling}"')
    (root / "config.toml").write_text(text.replace('interval = "1s"', 'interval = "1h"'))
    return root / "config.toml"


def claim_latencies(config: Path, n: int) -> tuple[list[float], list[float]]:
    """Return (settled → claimed, settled → GO on the server) latencies in ms for n files dropped 20 ms apart."""
    cfg = load_config(config, environ={})
    daemon = Daemon(cfg)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    wait_until(lambda: bool(daemon.stages), 10)
    time.sleep(0.5)
    written = {}
    outbox = cfg.paths.outbox_dir
    for i in range(1, n + 1):
        name = fi_name(i)
        tmp = outbox / f".{name}.tmp"
        tmp.write_bytes(b"<x/>")
        os.rename(tmp, outbox / name)
        written["GO" + name[2:-2]] = time.time()
        time.sleep(0.02)
    j = open_journal_at(cfg.paths.journal_path)
    wait_until(lambda: j.counts().get("sent", 0) >= n, 60)
    claimed = {r.go_name: r.created_at for r in j.recent_sets(n + 10)}
    sent = {g: next(at for at, state, _ in j.history(g) if state == "sent") for g in claimed}
    j.close()
    daemon.stop.set()
    t.join(15)
    return (
        sorted((claimed[g] - w) * 1000 for g, w in written.items() if g in claimed),
        sorted((sent[g] - w) * 1000 for g, w in written.items() if g in sent),
    )


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))]


def rss_with_waiting_sets(config: Path, n: int) -> float:
    """Peak RSS of the real daemon while it claims and signs n sets it cannot upload (remote unreachable)."""
    cfg = load_config(config, environ={})
    outbox = cfg.paths.outbox_dir
    outbox.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (outbox / fi_name(i)).write_bytes(b"<waiting/>")
    env = dict(os.environ, ONSS_RELAY__REMOTE__BASE_DIR="/nonexistent-remote")
    proc = subprocess.Popen(
        [sys.executable, "-m", "onss_relay.cli", "run", "--config", str(config), "--log-level", "error"],
        env=env,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    peak = 0
    deadline = time.monotonic() + 120
    done_at = None
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            pass
        if done_at is None and cfg.paths.journal_path.exists():
            j = open_journal_at(cfg.paths.journal_path)
            if j.counts().get("signed", 0) >= n:
                done_at = time.monotonic()
            j.close()
        if done_at and time.monotonic() - done_at > 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    return peak / 1024


def main() -> None:
    args = bench_args(__doc__)
    n_lat, n_rss = (100, 2000) if args.quick else (300, 10000)
    base = world("onss-bench-watch-")
    inotify, inotify_go = claim_latencies(make_relay_dir(base / "inotify", "false"), n_lat)
    polling, polling_go = claim_latencies(make_relay_dir(base / "polling", "true"), n_lat)
    rss_inotify = rss_with_waiting_sets(make_relay_dir(base / "rss-inotify", "false"), n_rss)
    rss_polling = rss_with_waiting_sets(make_relay_dir(base / "rss-polling", "true"), n_rss)
    polling_name = "polling observer"
    emit(
        [
            lower_is_better(
                "settled → claimed p50, settle = 0", "ms", pct(inotify, 0.5), pct(polling, 0.5), polling_name
            ),
            lower_is_better(
                "settled → claimed p99, settle = 0", "ms", pct(inotify, 0.99), pct(polling, 0.99), polling_name
            ),
            lower_is_better(
                "settled → GO on the server p50 (local transport)",
                "ms",
                pct(inotify_go, 0.5),
                pct(polling_go, 0.5),
                polling_name,
            ),
            lower_is_better(
                "settled → GO on the server p99 (local transport)",
                "ms",
                pct(inotify_go, 0.99),
                pct(polling_go, 0.99),
                polling_name,
            ),
            lower_is_better(f"peak RSS, {n_rss} sets waiting", "MB", rss_inotify, rss_polling, polling_name),
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
