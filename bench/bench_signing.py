"""Signing: signatures per second for 2 KB files, and peak RSS signing a 500 MB file, next to `openssl cms -sign`.

Run: python3 bench/bench_signing.py [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common import bench_args, emit, world
from cryptography.hazmat.primitives import serialization

from onss_relay import identity, signature
from tests.fixtures.procstat import peak_rss_mb


def rss_of(cmd: list[str]) -> float:
    code, peak = peak_rss_mb(cmd)
    if code != 0:
        raise RuntimeError(f"{cmd[0]} failed with status {code}")
    return peak


def main() -> None:
    args = bench_args(__doc__)
    n = 200 if args.quick else 1000
    big_mb = 100 if args.quick else 500
    d = world("onss-bench-sign-")
    ident = identity.self_signed_identity(d, "bench", key_type="rsa")
    key = d / "signer.key"
    key.write_bytes(
        ident.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files = []
    for i in range(n):
        p = d / f"FI.{i}"
        p.write_bytes(os.urandom(1024).hex().encode()[:2048])
        files.append(p)
    t0 = time.perf_counter()
    for p in files:
        signature.fs_content_for(ident, p, "sha256", "single-line")
    relay_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for p in files:
        subprocess.run(
            [
                "openssl",
                "cms",
                "-sign",
                "-binary",
                "-in",
                str(p),
                "-signer",
                str(d / "signer.crt"),
                "-inkey",
                str(key),
                "-outform",
                "DER",
                "-out",
                str(p) + ".der",
            ],
            check=True,
        )
    openssl_rate = n / (time.perf_counter() - t0)
    big = d / "FI.big"
    with big.open("wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(big_mb):
            f.write(block)
    config = d / "config.toml"
    config.write_text(
        f'[sender]\nnumber = "123456"\n[paths]\nroot = "{d}/spool"\n[signing]\nkey = "{d}/signer.p12"\n'
        '[remote]\ntransport = "local"\nbase_dir = "."\n'
    )
    relay_rss = rss_of(
        [
            sys.executable,
            "-m",
            "onss_relay.cli",
            "sign",
            str(big),
            "-o",
            str(d / "FS.big"),
            "--config",
            str(config),
            "--log-level",
            "error",
        ]
    )
    openssl_rss = rss_of(
        [
            "openssl",
            "cms",
            "-sign",
            "-binary",
            "-in",
            str(big),
            "-signer",
            str(d / "signer.crt"),
            "-inkey",
            str(key),
            "-outform",
            "DER",
            "-out",
            str(d / "big.der"),
        ]
    )
    emit(
        [
            {
                "name": "signatures per second, 2 KB FI (sign + self-check)",
                "unit": "sig/s",
                "relay": relay_rate,
                "baseline": openssl_rate,
                "ratio": relay_rate / openssl_rate,
                "baseline_name": "openssl cms -sign per file",
            },
            {
                "name": f"peak RSS signing a {big_mb} MB FI",
                "unit": "MB",
                "relay": relay_rss,
                "baseline": openssl_rss,
                "ratio": openssl_rss / relay_rss,
                "baseline_name": "openssl cms -sign -binary (ratio: baseline/relay)",
            },
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
