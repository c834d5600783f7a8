"""Scratch: run onss_relay.cli with tracemalloc, dumping a snapshot every MEM27_EVERY s."""

# ruff: noqa: E402, SIM115  (a scratch measure: imports after the repo is put on sys.path, files open for the run)

import os
import sys
import threading
import time
import tracemalloc

tracemalloc.start(int(os.environ.get("MEM27_FRAMES", "6")))
out = os.environ["MEM27_TRACE_OUT"]


def dumper():
    i = 0
    while True:
        time.sleep(float(os.environ.get("MEM27_EVERY", "20")))
        snap = tracemalloc.take_snapshot()
        snap = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        snap.dump(f"{out}.{i:03d}")
        cur, peak = tracemalloc.get_traced_memory()
        with open(out + ".sum", "a") as f:
            print(i, time.time(), cur // 1024, peak // 1024, file=f, flush=True)
        i += 1


threading.Thread(target=dumper, daemon=True).start()
sys.argv = ["onss-relay"] + sys.argv[1:]
from onss_relay.cli import main

sys.exit(main())
