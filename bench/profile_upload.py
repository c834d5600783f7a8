"""Where a declaration's time goes: `send --once` of N × 2 KB over loopback sshd (or through the 20 ms proxy),
sampled with py-spy (every process: the parent uploading, the forked child claiming and signing), each sample
put in the stage its stack is in; prints CPU milliseconds per declaration by stage.

Run: python3 bench/profile_upload.py [--sets N] [--delay SECONDS]   (needs py-spy: pip install py-spy; as root)
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import time

from common import REPO, Bench

from tests.fixtures.tcpproxy import TcpProxy

# (stage, frames that put a sample in it): the first stage whose frame is on the stack wins, so the more
# specific come first
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("results file (rewritten per change)", ("catch_up (onss_relay/results.py", "write_result (")),
    (
        "archive to sent/ + hold originals (moves, fsyncs)",
        ("archive_sets (", "release_originals (", "archive_finished ("),
    ),
    (
        "private copy of the FI + its hash (claim side)",
        ("BatchWriter.copy (", "digest_file (", "file_digest (", "_digest_or_none ("),
    ),
    ("FS and copies made durable (fsync per signing batch)", ("BatchWriter.commit (", "BatchWriter.write (")),
    ("sign + self check", ("sign_digest (", "fs_content_for (", "SignedDataTemplate", "_sign_files (")),
    ("well-formedness check (XML)", ("xml_problem (", "looks_like_xml (", "declaration_warnings (")),
    ("declaration keys (Forms, references)", ("declaration_keys (", "with_keys (")),
    ("open-for-write look (/proc)", ("open_for_writing (", "_written_by (")),
    ("hash of every byte sent (upload side)", ("_LocalSource.read (",)),
    ("change check at the gates (fstat)", ("check_unchanged (",)),
    ("journal: gate commits (uploading, go_sending)", ("Gates.commit (",)),
    ("journal: claim commits", ("add_sets (",)),
    ("journal: reads, other commits", ("onss_relay/journal/", "sqlite3", "psycopg")),
    ("claim (scan, names, sequence check)", ("onss_relay/stages/claim.py", "onss_relay/names.py")),
    (
        "upload: SFTP requests, replies, encryption",
        ("sftp_pipeline.py", "paramiko_async.py", "sftp_wire.py", "paramiko/", "cryptography/"),
    ),
    ("start: imports, config, connect, fork", ("<module>", "load_config", "_find_and_load", "connect (")),
]


VERBOSE = False
GIL = False
KEEP = ""


def stage_of(stack: str) -> str:
    """Given one collapsed py-spy stack (root first, frames separated by ';'), return the stage it belongs to."""
    for stage, marks in STAGES:
        if any(m in stack for m in marks):
            return stage
    return "other (interpreter, threads, waiting)"


def profile(b: Bench, n: int, delay: float, tree: str | None) -> tuple[dict[str, float], float, int]:
    """Given the bench, a set count and a delay each way, run send --once under py-spy; return the samples per
    stage (as seconds of CPU), the wall time and the sampling rate."""
    proxy = TcpProxy(b.sshd.port, delay=delay) if delay else None
    config = b.relay_config(port=proxy.port if proxy else None, name=f"relay-profile-{n}-{delay}")
    b.declarations(config.parent / "spool" / "outbox", n, start=30000)
    raw = config.parent / "profile.txt"
    rate = 250
    gil = ["--gil"] if GIL else []  # only the thread holding the GIL: Python's CPU, not threads waiting on the disk
    cmd = ["py-spy", "record", "--subprocesses", *gil, "--format", "raw", "--rate", str(rate), "--nonblocking", "-o", str(raw), "--",
           sys.executable, "-P", "-m", "onss_relay.cli", "send", "--once", "--config", str(config), "--log-level", "error"]  # fmt: skip
    t0 = time.perf_counter()
    # -P and PYTHONPATH: the relay of `tree` (another tree: the code before a change), never the current folder's
    env = dict(os.environ, PYTHONPATH=tree or str(REPO))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    if KEEP:
        shutil.copy(raw, KEEP)
    if proxy:
        proxy.close()
    seconds: dict[str, float] = collections.Counter()
    leaves: dict[tuple[str, str], float] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():  # a frame py-spy could not name whole ("… (") splits a line: seen at 5,000 sets
            continue
        # the forked child claiming and signing runs under forked._run; everything else is the uploading parent
        who = "child (claim, sign)" if "_run (onss_relay/forked.py" in stack else "parent (upload, archive)"
        seconds[f"{who}\t{stage_of(stack)}"] += int(count) / rate
        leaves[(stage_of(stack), ";".join(stack.split(";")[-3:]))] += int(count) / rate
    if VERBOSE:
        for (stage, leaf), s in sorted(leaves.items(), key=lambda kv: -kv[1])[:40]:
            print(f"{s:7.2f} s  {stage}: {leaf}")
    return dict(seconds), wall, rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds added each way (a TCP proxy)")
    ap.add_argument("--tree", help="PYTHONPATH of the relay profiled (default: this one)")
    ap.add_argument("--verbose", action="store_true", help="also the 40 busiest stack ends")
    ap.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (py-spy --gil)")
    ap.add_argument("--keep", default="", help="copy py-spy's raw stacks to this file")
    args = ap.parse_args()
    global VERBOSE, GIL, KEEP
    VERBOSE, GIL, KEEP = args.verbose, args.gil, args.keep
    if shutil.which("py-spy") is None:
        sys.exit("py-spy not found: pip install py-spy")
    b = Bench()
    try:
        seconds, wall, _ = profile(b, args.sets, args.delay, args.tree)
    finally:
        b.close()
    total = sum(seconds.values())
    print(f"{args.sets} sets, {args.delay * 1000:.0f} ms each way: {wall:.2f} s wall ({args.sets / wall:.0f} decl/s), "
          f"{total:.2f} s CPU sampled, {total / args.sets * 1000:.3f} ms CPU per declaration")  # fmt: skip
    by_stage: dict[str, float] = collections.Counter()
    by_process: dict[str, dict[str, float]] = collections.defaultdict(collections.Counter)
    for key, s in seconds.items():
        who, _, stage = key.partition("\t")
        by_stage[stage] += s
        by_process[who][stage] += s
    for stage, s in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {s / args.sets * 1000:.3f} | {100 * s / total:.0f} % |")
    for who, stages in sorted(by_process.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"\n{who}: {sum(stages.values()) / args.sets * 1000:.3f} ms CPU per declaration")
        for stage, s in sorted(stages.items(), key=lambda kv: -kv[1]):
            print(f"| {stage} | {s / args.sets * 1000:.3f} |")


if __name__ == "__main__":
    main()
