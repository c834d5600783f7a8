"""What the relay does to files per declaration, counted by strace (not timed, so a loaded machine cannot blur it):
`send --once` of N × 2 KB with each tree given in turn, on the local transport or the loopback sshd, every process
traced (`strace -f`); prints per declaration, for each kind of file (the FS, the private copy, the GO in sent/, the
results file, the hold record …), the files created, opened, renamed, linked, unlinked and fsynced, and the folder
fsyncs, with one total line per tree. Needs strace.

Run: python3 bench/count_files.py TREE [TREE ...] [--sets N] [--transport local|sftp] [--daemon] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Bench

from onss_relay.transport.local import make_remote_home
from tests.conftest import remote_config_text

CALLS = "openat,open,creat,rename,renameat,renameat2,link,linkat,unlink,unlinkat,fsync,fdatasync,syncfs,mkdir,mkdirat"
OPS = ("create", "open", "rename", "link", "unlink", "fsync", "fsync dir", "syncfs", "mkdir")
# a file's kind, from its path under the spool (or the local remote home); the first that matches wins
KINDS = [
    ("journal (SQLite db, WAL)", r"/journal\.db"),
    ("results cursor", r"/results\.cursor"),
    ("hold record", r"/held/.*\.held(-batch)?\.json"),
    ("held original (held/)", r"/held/"),
    ("results file", r"/results/"),
    ("FS (work/)", r"/work/\.?FS"),
    ("private copy of the FI (work/)", r"/work/\.?FI"),
    ("sent/: GO", r"/sent/[^/]+/GO"),
    ("sent/: FI and FS moved in", r"/sent/[^/]+/F[IS]"),
    ("remote (local transport)", r"/remote/"),
    ("outbox original", r"/outbox/"),
    ("scratch, lock, other in the spool", r"/spool/"),
]
FOLDERS = [(f"folder {k}", p) for k, p in [("outbox", r"/outbox/?$"), ("work", r"/work/?$"), ("held", r"/held/?$"), ("held/<batch>", r"/held/batch-[^/]+/?$"),
           ("sent/DAY", r"/sent/[^/]+/?$"), ("results", r"/results/?$"), ("remote", r"/remote/[A-Z-]+/?$"),
           ("spool", r"/spool/?$")]]  # fmt: skip
LINE = re.compile(r"^(\w+)\((.*)\) += (-?\d+)")
PATH = re.compile(r'"([^"]*)"|<(/[^>]*)>')


def kind_of(path: str, folder: bool = False) -> str | None:
    """Given a path (and whether it is a folder), return its kind, or None when it is not the relay's file."""
    for kind, pattern in FOLDERS if folder else KINDS:
        if re.search(pattern, path):
            return kind
    return None


def count(trace_dir: Path) -> collections.Counter[tuple[str, str]]:
    """Given the folder of `strace -ff` outputs, return (kind, operation) → how many, over every process."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for f in trace_dir.iterdir():
        for line in f.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if not m or int(m.group(3)) < 0:
                continue
            call, args = m.group(1), m.group(2)
            paths = [a or b for a, b in PATH.findall(args)]
            if call in ("fsync", "fdatasync", "syncfs"):
                path = paths[0] if paths else ""
                is_dir = kind_of(path, folder=True)
                kind = is_dir or kind_of(path)
                op = "syncfs" if call == "syncfs" else ("fsync dir" if is_dir else "fsync")
            elif call in ("openat", "open", "creat"):
                path = [p for p in paths if not p.endswith("/") or "O_DIRECTORY" not in args][-1] if paths else ""
                if "O_DIRECTORY" in args:
                    continue  # a folder opened to fsync it: counted at its fsync
                kind = kind_of(path)
                op = "create" if "O_CREAT" in args or call == "creat" else "open"
            else:
                path = paths[-1] if paths else ""  # the target of a rename or a link
                kind = kind_of(path)
                op = {"renameat": "rename", "renameat2": "rename", "linkat": "link", "unlinkat": "unlink"}.get(
                    call, call
                )
                if op == "mkdir":
                    kind = kind_of(path, folder=True) or kind
            if kind is not None:
                counts[(kind, op)] += 1
    return counts


def world(b: Bench, transport: str, n: int, start: int, tag: str) -> Path:
    """Given the bench (its sshd, its signing keys), the transport, N, the first sequence and a name, make a relay
    folder with N declarations in its outbox; return its config."""
    config = b.relay_config(name=tag)  # the keys and the sshd's config
    if transport == "local":
        make_remote_home(config.parent / "remote")
        config.write_text(remote_config_text('transport = "local"\nbase_dir = "remote"\nconnections = 2'))
    b.declarations(config.parent / "spool" / "outbox", n, start=start)
    return config


def traced_send(tree: str, config: Path, trace_dir: Path, n: int, daemon: bool) -> None:
    """Given a tree, a config, a folder for the traces, N and whether to run the daemon, run `send --once` (or
    `run` until N GOs are in sent/, then SIGTERM) under strace -ff."""
    trace_dir.mkdir()
    cmd = ["strace", "-f", "-ff", "-y", "-qq", "-e", f"trace={CALLS}", "-o", str(trace_dir / "t"), sys.executable,
           "-P", "-c", "import sys; from onss_relay.cli import main; sys.exit(main())",
           *(["run"] if daemon else ["send", "--once"]), "--config", str(config), "--log-level", "error"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=tree)
    if not daemon:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=config.parent)
        return
    strace = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, cwd=config.parent)
    deadline = time.monotonic() + 600
    while len(list((config.parent / "spool" / "sent").glob("*/GO*"))) < n and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # the results written after the last change (the daemon's tick is 1 s)
    relay = int(Path(f"/proc/{strace.pid}/task/{strace.pid}/children").read_text().split()[0])
    os.kill(relay, signal.SIGTERM)
    strace.wait(timeout=120)


def table(trees: list[str], results: list[collections.Counter[tuple[str, str]]], n: int) -> None:
    """Given the trees and their counts, print one row per file kind and operation, per declaration."""
    print(f"per declaration ({n} sets); columns: {' | '.join(trees)}")
    kinds = sorted({k for c in results for k, _ in c}, key=lambda k: [x for x, _ in KINDS + FOLDERS].index(k))
    for kind in kinds:
        for op in OPS:
            vals = [c.get((kind, op), 0) / n for c in results]
            if any(vals):
                print(f"  {kind:34} {op:10} " + " | ".join(f"{v:7.3f}" for v in vals))
    for op in OPS:
        vals = [sum(v for (_, o), v in c.items() if o == op) / n for c in results]
        print(f"  {'TOTAL':34} {op:10} " + " | ".join(f"{v:7.3f}" for v in vals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+")
    ap.add_argument("--sets", type=int, default=500)
    ap.add_argument("--transport", choices=("local", "sftp"), default="local")
    ap.add_argument("--daemon", action="store_true", help="`run` until every GO is in sent/, not `send --once`")
    ap.add_argument("--keep", type=Path, help="keep the traces in this folder")
    args = ap.parse_args()
    b = Bench()
    work = Path(tempfile.mkdtemp(prefix="count-files-"))  # the traces
    results = []
    try:
        for i, tree in enumerate(args.trees):
            config = world(b, args.transport, args.sets, 1 + i * args.sets, f"tree{i}")
            traced_send(os.path.realpath(tree), config, work / f"trace{i}", args.sets, args.daemon)
            results.append(count(work / f"trace{i}"))
        table(args.trees, results, args.sets)
    finally:
        b.close()
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
