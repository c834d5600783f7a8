"""Run the real daemon on N waiting sets (remote unreachable) and sample VmRSS/VmHWM of it and its children.
usage: rss.py REPO N OUTLOG [--trace]"""

# ruff: noqa: E402, SIM115  (a scratch measure: imports after the repo is put on sys.path, files open for the run)

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

repo = Path(sys.argv[1])
n = int(sys.argv[2])
out = open(sys.argv[3], "w", buffering=1)
trace = "--trace" in sys.argv
sys.path[:0] = [str(repo), str(repo / "bench")]
from bench_watch import make_relay_dir

from onss_relay.config import load_config
from onss_relay.journal import open_journal_at
from tests.conftest import fi_name

base = Path(tempfile.mkdtemp(prefix="mem27-"))
config = make_relay_dir(base / "r", "false")
cfg = load_config(config, environ={})
outbox = cfg.paths.outbox_dir
outbox.mkdir(parents=True, exist_ok=True)
for i in range(1, n + 1):
    (outbox / fi_name(i)).write_bytes(b"<waiting/>")
env = dict(os.environ, ONSS_RELAY__REMOTE__BASE_DIR="/nonexistent-remote", PYTHONPATH=str(repo))
cmd = [sys.executable]
if trace:
    cmd += [str(Path(__file__).with_name("traced.py"))]
    env["MEM27_TRACE_OUT"] = sys.argv[3] + ".trace"
else:
    cmd += ["-m", "onss_relay.cli"]
cmd += ["run", "--config", str(config), "--log-level", "error"]
proc = subprocess.Popen(cmd, env=env, stderr=open(sys.argv[3] + ".err", "w"), cwd=repo)


def kids(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def mem(pid):
    try:
        s = Path(f"/proc/{pid}/status").read_text()

        def g(k):
            return int(s.split(k + ":")[1].split()[0]) // 1024

        return g("VmRSS"), g("VmHWM"), g("RssAnon"), g("RssFile"), g("RssShmem"), int(s.split("Threads:")[1].split()[0])
    except Exception:
        return None


t0 = time.monotonic()
done_at = None
signed = 0
last = 0
while time.monotonic() - t0 < float(os.environ.get("MEM27_MAX", "3000")):
    m = mem(proc.pid)
    if m is None:
        break
    ks = {k: mem(k) for k in kids(proc.pid)}
    if time.monotonic() - last > 2 and cfg.paths.journal_path.exists():
        last = time.monotonic()
        try:
            j = open_journal_at(cfg.paths.journal_path)
            c = j.counts()
            j.close()
            signed = c.get("signed", 0)
        except Exception as e:
            c = str(e)
        js = sum(p.stat().st_size for p in cfg.paths.journal_path.parent.glob(cfg.paths.journal_path.name + "*"))
        print(
            f"t={time.monotonic() - t0:.0f} rss={m[0]} hwm={m[1]} anon={m[2]} file={m[3]} shm={m[4]} thr={m[5]} kids={ks} counts={c} journal={js // 1024}KB load={os.getloadavg()[0]:.1f}",
            file=out,
        )
    if done_at is None and signed >= n:
        done_at = time.monotonic()
    if (
        done_at
        and time.monotonic() - done_at > float(os.environ.get("MEM27_AFTER", "3"))
        and time.monotonic() - t0 > float(os.environ.get("MEM27_MIN", "0"))
    ):
        break
    time.sleep(0.2)
m = mem(proc.pid)
print(f"END t={time.monotonic() - t0:.0f} signed={signed} final={m}", file=out)
proc.send_signal(signal.SIGTERM)
proc.wait(60)
print("base", base, file=out)
