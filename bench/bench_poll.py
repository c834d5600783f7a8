"""Poll throughput: N response triples (FO + FS + GO) on a loopback sshd mirrored durably, linked and deleted;
baseline: one paramiko connection fetching and removing each file in turn (no fsync, no journal).

Run: python3 bench/bench_poll.py [--quick] [--json FILE]
"""

from __future__ import annotations

from pathlib import Path

from common import Bench, bench_args, emit, timed

from onss_relay.config import load_config
from onss_relay.pipeline import Relay
from onss_relay.simulator import notification_xml


def seed(b: Bench, n: int, start: int) -> int:
    out = b.sshd.home / "OUTTEST"
    files = 0
    for i in range(start, start + n):
        name = f"NOTI.999999.20261124.{i:05d}.T"
        (out / f"FO.{name}").write_bytes(notification_xml(f"0TICKET{i:06d}", "123456", "DMFA001"))
        (out / f"FS.{name}").write_bytes(b"MIIB" * 300)
        (out / f"GO.{name}").write_bytes(b"")
        files += 3
    return files


def paramiko_baseline(b: Bench, dest: Path) -> None:
    client, sftp = b.sftp_client()
    dest.mkdir(parents=True, exist_ok=True)
    for name in sftp.listdir("OUTTEST"):
        sftp.get(f"OUTTEST/{name}", str(dest / name))
        sftp.remove(f"OUTTEST/{name}")
    client.close()


def main() -> None:
    args = bench_args(__doc__)
    n = 300 if args.quick else 1000
    b = Bench()
    try:
        files = seed(b, n, 1)
        relay = Relay(load_config(b.relay_config(), environ={}))
        t_relay = timed(relay.poll_once)
        relay.close()
        seed(b, n, 50000)
        t_base = timed(lambda: paramiko_baseline(b, b.root / "baseline-inbox"))
    finally:
        b.close()
    emit(
        [
            {
                "name": f"poll {n} responses (×3 files), files/s",
                "unit": "files/s",
                "relay": files / t_relay,
                "baseline": files / t_base,
                "ratio": t_base / t_relay,
                "baseline_name": "paramiko get + remove per file, one connection",
            }
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
