"""One step of the volume benchmark (issue 29): a real CLI process, timed, its memory and progress watched.

Peak RSS comes two ways: GNU time's maximum resident set size (``wait4``'s ``ru_maxrss``: the largest single
process, the relay or a child it waited for, forked signers included; measured through /usr/bin/time because
Linux carries the RSS of the process that forked over exec into ``ru_maxrss``: the benchmark's own 55 MB would
show as every step's peak) and the largest sum of the proportional set size (PSS: shared pages counted once) of
the whole tree, read from /proc every half second. A step that runs past its limit gets SIGTERM (the relay stops
between batches) and is recorded as stopped, with how far it got.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Step:
    """What one step did: wall seconds, peak RSS (largest process, whole tree) in MB, whether it was stopped at its
    limit, its progress samples (seconds, count) and its stdout."""

    seconds: float
    rss_mb: float
    tree_mb: float
    stopped: bool
    samples: list[tuple[float, int]] = field(default_factory=list)
    out: str = ""


def tree_pss_mb(root: int) -> float:
    """Given a process id, return the PSS of it and all its descendants, in MB (0 when it is gone)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for pid in tree:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            total += next(int(ln.split()[1]) for ln in rollup if ln.startswith("Pss:")) * 1024
        except (OSError, ValueError, IndexError, StopIteration):
            continue
    return total / 1e6


def signal_command(time_pid: int, sig: int) -> None:
    """Given the pid of /usr/bin/time, send ``sig`` to the command it runs (time itself would die of SIGTERM)."""
    try:
        children = Path(f"/proc/{time_pid}/task/{time_pid}/children").read_text().split()
    except OSError:
        return
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), sig)


def run_step(
    cmd: list[str],
    tree: Path,
    limit: float | None = None,
    progress: Callable[[], int] | None = None,
    every: float = 30.0,
    until: str | None = None,
) -> Step:
    """Given CLI arguments and the source tree to run them with, run `onss-relay ARGS`; SIGTERM it after ``limit``
    seconds (or, with ``until``, once that text is in its stderr: the time is then until that text); sample
    ``progress()`` every ``every`` seconds. Return the Step; a failure that was not asked for ends the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    err = tempfile.TemporaryFile()  # noqa: SIM115  # read while it runs, closed with the process
    out = tempfile.TemporaryFile()  # noqa: SIM115
    t0 = time.perf_counter()
    rss = tempfile.NamedTemporaryFile()  # noqa: SIM115
    time_cmd = ["/usr/bin/time", "-f", "%M", "-o", rss.name]
    # cwd: `python -m` puts the current folder first on sys.path, before PYTHONPATH (run from a checkout, the
    # baseline tree would run that checkout's code)
    p = subprocess.Popen(
        [*time_cmd, sys.executable, "-m", "onss_relay.cli", *cmd], stdout=out, stderr=err, env=env, cwd=tree
    )
    tree_mb, samples, stopped, took, next_sample = 0.0, [], False, None, every
    while True:
        if p.poll() is not None:
            break
        now = time.perf_counter() - t0
        if not until:  # a start-up is timed: no /proc walk beside it
            tree_mb = max(tree_mb, tree_pss_mb(p.pid))
        if progress and now >= next_sample:
            samples.append((round(now, 1), progress()))
            print(f"    {now:8.0f} s  {samples[-1][1]:>8}", flush=True)
            next_sample += every
        if until and took is None and _said(err, until):
            took = now
            signal_command(p.pid, signal.SIGTERM)
        if limit and now > limit and not stopped:
            stopped = True
            signal_command(p.pid, signal.SIGTERM)
        time.sleep(0.5 if not until else 0.01)
    took = took or time.perf_counter() - t0
    if progress:
        samples.append((round(took, 1), progress()))
    if p.returncode and not until and not stopped:
        err.seek(0)
        out.seek(0)  # the command's report (what it refused or quarantined) is on stdout, its log on stderr
        raise SystemExit(f"{cmd} failed ({p.returncode}): {out.read().decode()[-2000:]}\n{err.read().decode()[-2000:]}")
    out.seek(0)
    peak_kb = int(Path(rss.name).read_text().split()[-1])
    return Step(took, peak_kb / 1024, tree_mb, stopped, samples, out.read().decode())


def _said(err: IO[bytes], text: str) -> bool:
    """Given the stderr file of a running process, return whether ``text`` is in it yet."""
    err.seek(0)
    return text.encode() in err.read()


def count(folder: Path, prefix: str = "") -> int:
    """Given a folder, return how many entries it holds whose name starts with ``prefix`` (0 when it is missing)."""
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.startswith(prefix))
    except FileNotFoundError:
        return 0


def usage(folder: Path) -> tuple[int, float]:
    """Given a folder, return (files under it, MB they occupy on disk: allocated blocks, as `du` counts)."""
    files, size = 0, 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                files += 1
            except FileNotFoundError:
                continue
    return files, size / 1e6


def rates(samples: list[tuple[float, int]]) -> list[float]:
    """Given progress samples (seconds, count), return the rate of each interval (count per second): a rate that
    falls as the count grows is a step slower than linear in the count."""
    out = []
    for (t0, c0), (t1, c1) in zip(samples, samples[1:], strict=False):
        if t1 > t0:
            out.append(round((c1 - c0) / (t1 - t0), 1))
    return out
