"""tracemalloc per file of one scan's index of N waiting files (index + settle tracker), parse_name cache excluded.
usage: index_cost.py REPO N"""

# ruff: noqa: E402, SIM115  (a scratch measure: imports after the repo is put on sys.path, files open for the run)

import shutil
import sys
import tempfile
import tracemalloc
from pathlib import Path

repo = sys.argv[1]
n = int(sys.argv[2])
sys.path[:0] = [repo, repo + "/bench"]
from bench_watch import make_relay_dir

from onss_relay.config import load_config
from onss_relay.names import parse_name
from onss_relay.spool import Spool
from onss_relay.stages.outbox_index import index_outbox
from onss_relay.stages.settle import SettleTracker
from tests.conftest import fi_name

base = Path(tempfile.mkdtemp(prefix="mem27-idx-"))
spool = Spool(load_config(make_relay_dir(base / "r", "false"), environ={}).paths)
spool.create()
for i in range(1, n + 1):
    (spool.outbox / fi_name(i)).write_bytes(b"<waiting/>")
tracker = SettleTracker(2.0)
parse_name.cache_clear()
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
index = index_outbox(spool, tracker)
cache = parse_name.cache_info()
parse_name.cache_clear()
held, peak = (m - before for m in tracemalloc.get_traced_memory())
print(
    f"{repo} n={n} held={held / n:.0f} B/file peak={peak / n:.0f} B/file (peak incl. parse cache {cache.currsize} names) tracker={len(tracker.sightings())}"
)
getattr(index, "close", lambda: None)()
shutil.rmtree(base)
