"""An idle daemon with N held originals just sent (issue 29 review: held/ swept every 10 s, every record parsed):
its peak RSS (VmHWM) and the CPU it spends (utime + stime from /proc) once started, over SECONDS.

usage: PYTHONPATH=$PWD python3 bench/held_idle.py REPO [N] [SECONDS]
REPO is the checkout whose daemon runs (this one, or a `git archive` of another commit: before/after side by
side). The held originals are fabricated as `hold_many` holds them: in batches of 64 under one batch record each, held
now, written now (not due for an hour).
"""

# ruff: noqa: E402  (the repo measured is put on sys.path first)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from bench_watch import make_relay_dir

from onss_relay.config import load_config
from onss_relay.spool import file_digest
from onss_relay.stages.uncertain import boot_id, boottime
from tests.conftest import fi_name

BATCH = 64  # originals per batch record (the uploader holds up to 64 sets archived together)

base = Path(tempfile.mkdtemp(prefix="held-idle-"))
config = make_relay_dir(base / "r", "false")
cfg = load_config(config, environ={})
folder = cfg.paths.root / "held"
folder.mkdir(parents=True, exist_ok=True)
body = b"<DmfA>" + b"x" * 2000 + b"</DmfA>\r\n"
for first in range(1, n + 1, BATCH):  # as hold_many holds them: a folder and one record per batch of 64
    batch = folder / f"batch-{time.time_ns()}-{first}"
    batch.mkdir()
    entries = {}
    for i in range(first, min(first + BATCH, n + 1)):
        path = batch / fi_name(i)
        path.write_bytes(body)
        st = path.stat()
        entries[path.name] = {
            "file": path.name,
            "set": "GO" + path.name[2:-2],
            "digest": file_digest(path, "sha256"),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "held_at": time.time(),
            "boottime": boottime(),
            "boot_id": boot_id(),
            "sent_dir": str(cfg.paths.root / "sent"),
            "ino": st.st_ino,
        }
    (folder / f"{batch.name}.held-batch.json").write_text(json.dumps({"held": entries}))

env = dict(os.environ, PYTHONPATH=str(repo))
cmd = [sys.executable, "-m", "onss_relay.cli", "run", "--config", str(config), "--log-level", "error"]
with open(base / "run.err", "w") as err:
    proc = subprocess.Popen(cmd, env=env, stderr=err, cwd=repo)
    tick = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    def hwm_mb() -> float:
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    time.sleep(15)  # start-up: imports, journal, first scans and the first sweep
    cpu0, t0 = cpu_s(), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = cpu_s(), time.monotonic()
    hwm = hwm_mb()
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
left = sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".held-batch.json"))
load = os.getloadavg()[0]
print(
    f"held={n} idle {t1 - t0:.0f} s: cpu {100 * (cpu1 - cpu0) / (t1 - t0):.1f} % of a core, "
    f"VmHWM {hwm:.1f} MB, held left {left}, load {load:.1f} ({repo})"
)
