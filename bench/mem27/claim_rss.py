"""VmHWM of one process claiming N waiting sets (Claimer.scan, the work of send --once's claim child), then
rescanning them claimed and waiting. usage: claim_rss.py REPO N"""

# ruff: noqa: E402, SIM115  (a scratch measure: imports after the repo is put on sys.path, files open for the run)

import shutil
import sys
import tempfile
import time
from pathlib import Path

repo = sys.argv[1]
n = int(sys.argv[2])
sys.path[:0] = [repo, repo + "/bench"]
from bench_watch import make_relay_dir

from onss_relay.config import load_config
from onss_relay.journal import open_journal_at
from onss_relay.log import setup_logging
from onss_relay.spool import Spool
from onss_relay.stages.claim import Claimer
from tests.conftest import fi_name

setup_logging("error")


def hwm():
    s = Path("/proc/self/status").read_text()
    return int(s.split("VmHWM:")[1].split()[0]) // 1024, int(s.split("VmRSS:")[1].split()[0]) // 1024


base = Path(tempfile.mkdtemp(prefix="mem27-claim-"))
cfg = load_config(make_relay_dir(base / "r", "false"), environ={})
spool = Spool(cfg.paths)
spool.create()
for i in range(1, n + 1):
    (spool.outbox / fi_name(i)).write_bytes(b"<waiting/>")
j = open_journal_at(cfg.paths.journal_path)
c = Claimer(cfg, j, spool)
h0 = hwm()
t = time.process_time()
claimed = c.scan()
h1 = hwm()
t1 = time.process_time() - t
again = c.scan()
h2 = hwm()
t2 = time.process_time() - t - t1
print(
    f"{repo} n={n} start(hwm,rss)={h0} after claim={h1} claimed={len(claimed)} cpu={t1:.0f}s; rescan of the claimed: {h2} claimed={len(again)} cpu={t2:.0f}s"
)
j.close()
shutil.rmtree(base)
