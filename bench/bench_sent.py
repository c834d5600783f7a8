"""The claim's sent/ lookups (ACRF-133's second memory) while a day's folder grows: the day folder watched (inotify,
folder_events.py) against the same code listing it again at each look (what it does where inotify cannot be had).

Pages of 200 sets: each page's sets asked about, then their FI, FS and GO archived into the day folder, as the
uploading process does meanwhile. The figure is the CPU milliseconds of the lookups only (time.thread_time).

Run: python3 bench/bench_sent.py [--quick] [--json FILE]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import bench_args, emit, lower_is_better, world

from onss_relay import sent_names
from onss_relay.names import parse_name
from tests.conftest import TODAY, fi_name

PAGE = 200


def lookups_cpu(root: Path, n: int, watched: bool) -> float:
    """Given an empty folder, a number of sets and whether sent/ is watched, return the lookups' CPU seconds."""
    day = root / "sent" / f"{TODAY[:4]}-{TODAY[4:6]}-{TODAY[6:]}"
    day.mkdir(parents=True)
    names = sent_names.SentNames(root / "sent")
    if not watched:
        names._events.watch = lambda folder: False  # type: ignore[method-assign]
    asked = [parse_name("GO" + fi_name(s + 1)[2:-2]) for s in range(n)]
    cpu = 0.0
    for page in range(0, n, PAGE):
        t = time.thread_time()
        names.look_again()
        for name in asked[page : page + PAGE]:
            names.sent_with(name)
        cpu += time.thread_time() - t
        for s in range(page, min(n, page + PAGE)):
            fi = fi_name(s + 1)
            for entry in (fi, "FS" + fi[2:], "GO" + fi[2:-2]):
                os.close(os.open(day / entry, os.O_CREAT | os.O_WRONLY, 0o644))
    names.close()
    return cpu


def main() -> None:
    args = bench_args(__doc__)
    figures = []
    for n in (2000,) if args.quick else (10000, 30000):
        base = world("onss-bench-sent-")
        runs = {}
        for watched in (True, False):
            root = Path(tempfile.mkdtemp(dir=base))
            runs[watched] = lookups_cpu(root, n, watched) * 1000
            shutil.rmtree(root)
        figures.append(
            lower_is_better(
                f"claim's sent/ lookups, {n} sets archived meanwhile, CPU",
                "ms",
                runs[True],
                runs[False],
                "the same lookups listing the day folder again at each page (no inotify)",
            )
        )
    emit(figures, args.json)


if __name__ == "__main__":
    sys.exit(main())
