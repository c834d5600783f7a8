"""Upload throughput: (a) loopback sshd, relay vs openssl+`sftp -b`; (b) 20 ms each way, relay vs sequential paramiko.

Run: python3 bench/bench_upload.py [--quick] [--json FILE]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from common import Bench, DelayProxy, bench_args, emit, timed

from onss_relay.config import load_config
from onss_relay.pipeline import Relay
from tests.conftest import fi_name

LOOPBACK_ROUNDS = 3


def relay_send(config: Path) -> int:
    relay = Relay(load_config(config, environ={}))
    try:
        report = relay.send_once(wait_for_settle=False)
    finally:
        relay.close()
    return len(report.upload.sent)


def shell_baseline(b: Bench, files: list[Path], out: Path) -> None:
    """openssl cms -sign per file, then one `sftp -b` batch on one connection putting FI, FS and GO."""
    key = b.root / "relay" / "keys" / "signer.key"
    if not key.exists():
        from cryptography.hazmat.primitives import serialization

        key.write_bytes(
            b.identity.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    cert = b.root / "relay" / "keys" / "signer.crt"
    script = out / "sign.sh"
    script.write_text(
        'set -e\nfor f in FI.*; do g=FS${f#FI}; openssl cms -sign -binary -in "$f" -signer '
        f'{cert} -inkey {key} -outform DER -nosmimecap | base64 -w0 > "$g"; : > "GO${{f#FI}}"; done\n'
    )
    batch = out / "batch"
    lines = ["cd INTEST"]
    for f in files:
        rest = f.name[2:]
        lines += [f"put {f.name}", f"put FS{rest}", f"put GO{rest[:-2]}"]
    batch.write_text("\n".join(lines) + "\n")
    subprocess.run(["bash", str(script)], cwd=out, check=True)
    for f in out.glob("GO.*"):
        f.rename(out / f.name[:-2])
    subprocess.run(sftp_batch(b, batch), cwd=out, check=True, stdout=subprocess.DEVNULL)


def sftp_batch(b: Bench, batch: Path) -> list[str]:
    """The OpenSSH sftp client running a batch file against the bench's sshd, with strict host-key checking."""
    known = f"UserKnownHostsFile={b.known_hosts}"
    return ["sftp", "-q", "-b", str(batch), "-i", str(b.key), "-P", str(b.sshd.port), "-o", known,
            "-o", "StrictHostKeyChecking=yes", f"{b.sshd.user}@127.0.0.1"]  # fmt: skip


def sequential_paramiko(b: Bench, files: list[Path], port: int) -> None:
    """One connection, one paramiko put per file (FI, FS, GO), one after the other."""
    client, sftp = b.sftp_client(port)
    empty = files[0].parent / "empty"
    empty.write_bytes(b"")
    for f in files:
        sftp.put(str(f), f"INTEST/{f.name}")
        sftp.put(str(f), f"INTEST/FS{f.name[2:]}")  # same size as an FS: the signing is not what is measured
        sftp.put(str(empty), f"INTEST/GO{f.name[2:-2]}")
    client.close()


def main() -> None:
    args = bench_args(__doc__)
    n_loop = 300 if args.quick else 1000
    n_wan, n_wan_base = (150, 30) if args.quick else (500, 100)
    b = Bench()
    figures = []
    try:
        figures.append(loopback(b, n_loop, 1 if args.quick else LOOPBACK_ROUNDS))
        b.clear_remote()
        proxy = DelayProxy(b.sshd.port, delay=0.020)
        wan = b.relay_config(port=proxy.port, name="relay-wan")
        b.declarations(wan.parent / "spool" / "outbox", n_wan, start=5000)
        t_relay = timed(lambda: relay_send(wan))
        wan_files = b.declarations(b.root / "wan-baseline", n_wan_base, start=8000)
        t_base = timed(lambda: sequential_paramiko(b, wan_files, proxy.port))
        proxy.close()
        figures.append(
            {
                "name": f"20 ms each way, {n_wan} × 2 KB, declarations/s",
                "unit": "decl/s",
                "relay": n_wan / t_relay,
                "baseline": n_wan_base / t_base,
                "ratio": (n_wan / t_relay) / (n_wan_base / t_base),
                "baseline_name": "sequential paramiko put per file, one connection",
            }
        )
        figures.append(upload_rss(b, 100 if args.quick else 500))
        if not args.quick:
            figures += growth(b, (100, 1000, 10000))
    finally:
        b.close()
    emit(figures, args.json)


def loopback(b: Bench, n: int, rounds: int) -> dict[str, object]:
    """The relay and the shell baseline on the loopback sshd, in turn, ``rounds`` times each; the figure is each
    side's median, every round printed. A shared machine's speed comes and goes in waves of seconds (the same
    code measured 430 and 600 decl/s a minute apart): a 2-second relay run meets a wave whole, the baseline's
    10 seconds average it out. Taking turns, both sides meet the same waves."""
    relay_s, base_s = [], []
    for r in range(rounds):
        b.clear_remote()
        config = b.relay_config(name=f"relay-{r}")
        b.declarations(config.parent / "spool" / "outbox", n)
        relay_s.append(timed(lambda config=config: relay_send(config)))
        b.clear_remote()
        base_dir = b.root / f"baseline-{r}"
        files = b.declarations(base_dir, n)
        base_s.append(timed(lambda files=files, base_dir=base_dir: shell_baseline(b, files, base_dir)))
    relay, base = [n / t for t in relay_s], [n / t for t in base_s]
    shown = "; ".join(f"{x:.0f}/{y:.1f}" for x, y in zip(relay, base, strict=True))
    return {
        "name": f"loopback sshd, {n} × 2 KB, declarations/s",
        "unit": "decl/s",
        "relay": statistics.median(relay),
        "baseline": statistics.median(base),
        "ratio": statistics.median(relay) / statistics.median(base),
        "baseline_name": f"openssl cms -sign per file + one sftp -b batch; median of {rounds} turns each, relay/baseline"
        f" decl/s: {shown}",
    }


def upload_rss(b: Bench, mb: int) -> dict[str, object]:
    """Peak RSS of `onss-relay send --once` sending one big FI over SFTP, next to `sftp -b put` of the same file."""
    from tests.fixtures.procstat import peak_rss_mb

    b.clear_remote()
    config = b.relay_config(name="relay-big")
    outbox = config.parent / "spool" / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    big = outbox / fi_name(9999)
    with big.open("wb") as f:
        f.truncate(mb << 20)
    _, relay_rss = peak_rss_mb(
        [sys.executable, "-m", "onss_relay.cli", "send", "--once", "--config", str(config), "--log-level", "error"]
    )
    copy = b.root / "big-copy"
    with copy.open("wb") as f:
        f.truncate(mb << 20)
    batch = b.root / "big.batch"
    batch.write_text(f"put {copy} INTEST/big\n")
    _, base_rss = peak_rss_mb(sftp_batch(b, batch))
    return {
        "name": f"peak RSS sending one {mb} MB FI over SFTP",
        "unit": "MB",
        "relay": relay_rss,
        "baseline": base_rss,
        "ratio": base_rss / relay_rss,
        "baseline_name": "sftp -b put (ratio: baseline/relay)",
    }


def growth(b: Bench, sizes: tuple[int, ...]) -> list[dict[str, object]]:
    """How the cost grows: relay declarations/s on loopback for 100 … 10,000 sets dropped at once."""
    out = []
    first = None
    for i, n in enumerate(sizes):
        b.clear_remote()
        config = b.relay_config(name=f"relay-growth-{n}")
        b.declarations(config.parent / "spool" / "outbox", n, start=20000 + i * 20000 if n < 20000 else 1)
        rate = n / timed(lambda config=config: relay_send(config))
        first = first or rate
        out.append(
            {
                "name": f"growth: {n} sets on loopback, declarations/s",
                "unit": "decl/s",
                "relay": rate,
                "baseline": first,
                "ratio": rate / first,
                "baseline_name": f"same relay at {sizes[0]} sets",
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
