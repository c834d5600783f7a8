"""Poll throughput: N response triples (FO + FS + GO) on a loopback sshd mirrored durably, linked and deleted;
baseline: one paramiko connection fetching and removing each file in turn (no fsync, no journal). Then the same
through a TCP proxy adding 20 ms each way (fewer answers: the baseline pays five round trips per file).

Run: python3 bench/bench_poll.py [--quick] [--json FILE]
"""

from __future__ import annotations

from pathlib import Path

from common import Bench, bench_args, emit, timed

from onss_relay.config import load_config
from onss_relay.pipeline import Relay
from onss_relay.simulator import notification_xml
from tests.fixtures.tcpproxy import TcpProxy


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


def paramiko_baseline(b: Bench, dest: Path, port: int | None = None) -> None:
    client, sftp = b.sftp_client(port)
    dest.mkdir(parents=True, exist_ok=True)
    for name in sftp.listdir("OUTTEST"):
        sftp.get(f"OUTTEST/{name}", str(dest / name))
        sftp.remove(f"OUTTEST/{name}")
    client.close()


def relay_poll(config: Path) -> float:
    """Given a relay config, poll once (mirror, link, delete) and return the seconds it took."""
    relay = Relay(load_config(config, environ={}))
    try:
        return timed(relay.poll_once)
    finally:
        relay.close()


def figure(label: str, files: int, t_relay: float, t_base: float) -> dict[str, object]:
    return {
        "name": label,
        "unit": "files/s",
        "relay": files / t_relay,
        "baseline": files / t_base,
        "ratio": t_base / t_relay,
        "baseline_name": "paramiko get + remove per file, one connection",
    }


def main() -> None:
    args = bench_args(__doc__)
    n = 300 if args.quick else 1000
    n_wan = 30 if args.quick else 100
    b = Bench()
    figures = []
    try:
        files = seed(b, n, 1)
        t_relay = relay_poll(b.relay_config())
        seed(b, n, 50000)
        t_base = timed(lambda: paramiko_baseline(b, b.root / "baseline-inbox"))
        figures.append(figure(f"poll {n} responses (×3 files), files/s", files, t_relay, t_base))
        proxy = TcpProxy(b.sshd.port, delay=0.020)
        try:
            wan = b.relay_config(port=proxy.port, name="relay-wan")
            files = seed(b, n_wan, 20000)
            t_relay = relay_poll(wan)
            seed(b, n_wan, 60000)
            t_base = timed(lambda: paramiko_baseline(b, b.root / "baseline-wan-inbox", proxy.port))
        finally:
            proxy.close()
        figures.append(figure(f"20 ms each way, poll {n_wan} responses (×3), files/s", files, t_relay, t_base))
    finally:
        b.close()
    emit(figures, args.json)


if __name__ == "__main__":
    main()
