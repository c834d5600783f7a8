"""The archive stage alone, two trees side by side: N sets claimed and signed (local transport, not timed), then
archived to sent/ with their outbox originals held (`Spool.archive_sets`, batches of 64 as the uploader makes
them), timed by this process's own CPU (user + sys) and wall clock; each tree in turn, ROUNDS rounds. What the
issue-27 changes to file creation (one hold record per batch, the sent GOs linked) save, without SFTP or signing
around it.

Run: python3 bench/archive_cpu.py BEFORE_TREE AFTER_TREE [--sets N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from common import Bench

from onss_relay.transport.local import make_remote_home
from tests.conftest import remote_config_text

# run in the tree's own process: claim and sign (untimed), then time archive_sets over batches of 64
ARCHIVE = """
import json, resource, sys, time
from pathlib import Path
from onss_relay.config import load_config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
import onss_relay
cfg = load_config(Path(sys.argv[1]), environ={})
relay = Relay(cfg)
relay.claim()
relay.signer.sign_queued()
rows = relay.journal.sets_in(State.SIGNED)
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for i in range(0, len(rows), 64):
    relay.spool.archive_sets(rows[i : i + 64])
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
relay.close()
print(json.dumps({"sets": len(rows), "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                  "wall": t1 - t0, "tree": onss_relay.__file__}))
"""


def archive(b: Bench, tree: str, n: int, tag: str, start: int) -> dict[str, float]:
    """Given the bench, a tree, N, a name and the first sequence, claim, sign and archive N sets with that tree;
    return its figures."""
    config = b.relay_config(name=tag)
    make_remote_home(config.parent / "remote")
    config.write_text(remote_config_text('transport = "local"\nbase_dir = "remote"\nconnections = 2'))
    b.declarations(config.parent / "spool" / "outbox", n, start=start)
    run = subprocess.run([sys.executable, "-P", "-c", ARCHIVE, str(config)], env=dict(os.environ, PYTHONPATH=tree),
                         capture_output=True, text=True, cwd=config.parent)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    assert os.path.realpath(str(got["tree"])).startswith(os.path.realpath(tree)), got
    assert got["sets"] == n, got
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    b = Bench()
    try:
        for r in range(args.rounds):
            for i, (which, tree) in enumerate((("before", args.before), ("after", args.after))):
                g = archive(b, tree, args.sets, f"{which}{r}", 1 + (2 * r + i) * args.sets)
                per = {k: g[k] / args.sets * 1000 for k in ("user", "sys", "wall")}
                print(f"{which}{r}: archive + hold, ms per set: cpu {per['user'] + per['sys']:.3f} (user "
                      f"{per['user']:.3f}, sys {per['sys']:.3f}), wall {per['wall']:.3f}")  # fmt: skip
    finally:
        b.close()


if __name__ == "__main__":
    main()
