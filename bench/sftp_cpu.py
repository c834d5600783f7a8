"""The SFTP upload pipeline alone, per set: N one-part sets (FI 2 KB from disk with its digest, FS 3 KB, GO) put
through `SftpTransport.run_uploads` on the loopback sshd (or the 20 ms proxy), no journal, no signing; each tree
in its own process, in turn, ROUNDS times; prints the process's CPU ms per set (time.process_time: every thread,
paramiko's packet reader included) and, with --profile, the busiest functions (cProfile, the calling thread).

Run: python3 bench/sftp_cpu.py TREE [TREE ...] [--sets N] [--delay SECONDS] [--rounds R] [--profile]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from common import Bench

from tests.fixtures.tcpproxy import TcpProxy

# run in the tree's own interpreter process: connect, put N sets, print CPU seconds
RUN_SETS = """
import cProfile, hashlib, pstats, resource, sys, time
from pathlib import Path
from onss_relay.config import load_config
from onss_relay.transport.base import PutFile, Step, Upload
from onss_relay.transport.sftp import SftpTransport
config, fi_dir, n, profile = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
cfg = load_config(Path(config))
t = SftpTransport.connect(cfg.remote)
fis = sorted(fi_dir.iterdir())[:n]
digest = "sha256:" + hashlib.sha256(fis[0].read_bytes()).hexdigest()
done = []
def upload(i, fi):
    steps = [Step("FI", [PutFile("INTEST", fi.name, local=fi, digest=digest, key=fi.name)]),
             Step("FS", [PutFile("INTEST", fi.name[:-3] + "FS", data=b"s" * 3000, key=fi.name)]),
             Step("GO", [PutFile("INTEST", fi.name[:-3] + "GO", key=fi.name)])]
    return Upload(fi.name, steps, gate=lambda s: None, done=lambda: done.append(1))
uploads = [upload(i, fi) for i, fi in enumerate(fis)]
t.prepare_uploads()
time.sleep(0.5)  # the extra sessions open: measured is the uploads, not the connection
prof = cProfile.Profile() if profile else None
c0, w0, m0 = time.process_time(), time.perf_counter(), time.thread_time()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
if prof: prof.enable()
t.run_uploads(iter(uploads), window=256)
if prof: prof.disable()
cpu, wall, main = time.process_time() - c0, time.perf_counter() - w0, time.thread_time() - m0
assert len(done) == n, len(done)
t.close()
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_THREAD)
print(f"SPLIT user {r1.ru_utime - r0.ru_utime:.3f} sys {r1.ru_stime - r0.ru_stime:.3f} (uploading thread: user "
      f"{t1.ru_utime - t0.ru_utime:.3f} sys {t1.ru_stime - t0.ru_stime:.3f}); context switches: voluntary "
      f"{r1.ru_nvcsw - r0.ru_nvcsw}, involuntary {r1.ru_nivcsw - r0.ru_nivcsw}", file=sys.stderr)
import onss_relay
print(f"RESULT {cpu} {wall} {main} {onss_relay.__file__}")
if prof:
    pstats.Stats(prof, stream=sys.stderr).sort_stats(sys.argv[5] if len(sys.argv) > 5 else "tottime").print_stats(45)
"""


def run(b: Bench, tree: str, n: int, delay: float, fi_dir: str, profile: bool) -> tuple[float, float, float]:
    """Given the bench, a tree and a set count, put N sets with that tree's pipeline; return CPU (the process's
    and the uploading thread's) and wall seconds."""
    proxy = TcpProxy(b.sshd.port, delay=delay) if delay else None
    config = b.relay_config(port=proxy.port if proxy else None, name="sftp-cpu")
    out = subprocess.run([sys.executable, "-P", "-c", RUN_SETS, str(config), fi_dir, str(n), "1" if profile else "0"],
                         env=dict(os.environ, PYTHONPATH=tree), check=True, capture_output=True, text=True)  # fmt: skip
    if proxy:
        proxy.close()
    b.clear_remote()
    print(out.stderr if profile else out.stderr.rsplit("SPLIT ", 1)[-1].strip())
    *figures, loaded = out.stdout.rsplit("RESULT ", 1)[1].split()
    assert os.path.realpath(loaded).startswith(os.path.realpath(tree)), f"ran {loaded}, not {tree}"  # -P: not cwd's
    cpu, wall, main = (float(x) for x in figures)
    return cpu, wall, main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    b = Bench()
    try:
        fi_dir = b.root / "fis"
        b.declarations(fi_dir, args.sets)
        print(f"load {os.getloadavg()[0]:.2f}; {args.sets} sets, {args.delay * 1000:.0f} ms each way")
        for r in range(args.rounds):
            for i, tree in enumerate(args.trees):
                cpu, wall, main = run(b, tree, args.sets, args.delay, str(fi_dir), args.profile)
                print(f"round {r} tree {i} ({tree}): cpu {cpu / args.sets * 1000:.3f} ms/set "
                      f"(uploading thread {main / args.sets * 1000:.3f}, paramiko's reader {(cpu - main) / args.sets * 1000:.3f}), "
                      f"wall {wall / args.sets * 1000:.3f} ms/set, {args.sets / wall:.0f} sets/s")  # fmt: skip
        print(f"load {os.getloadavg()[0]:.2f}")
    finally:
        b.close()


if __name__ == "__main__":
    main()
