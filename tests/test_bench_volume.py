"""The volume benchmark measures the relay, not itself (issue 29, bench/volume_steps.py).

Linux keeps the resident set of the process that forked in the child's ``ru_maxrss`` across exec: timed with
``os.wait4`` on a child of a large benchmark process, a small command showed the benchmark's size as its peak.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from volume_steps import rates, run_step  # noqa: E402

from onss_relay.names import parse_name  # noqa: E402


def test_peak_rss_of_a_step_is_the_relay_not_the_benchmark() -> None:
    """`onss-relay --version` (tens of MB) run by a process holding 300 MB: the step's peak RSS is its own."""
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident
    step = run_step(["--version"], REPO)
    assert 5 < step.rss_mb < 150, step
    assert step.tree_mb < 150, step
    assert len(ballast) == 300 * 1024 * 1024


def test_rates_show_a_step_slowing_with_the_count() -> None:
    """Progress samples (seconds, count) give the rate of each interval."""
    assert rates([(0, 0), (10, 100), (20, 150)]) == [10.0, 5.0]


def test_the_benchmark_names_100000_declarations_of_one_day_within_the_grammar() -> None:
    """The 100,000-declaration run drops one sender's day: every name parses, none repeats (a sixth digit at
    100,000 was quarantined and ended the run)."""
    from bench_volume import declaration_name

    names = [declaration_name(i) for i in (*range(1, 3), *range(99_990, 100_010), 1_000_000)]
    assert len(set(names)) == len(names)
    assert len({parse_name(n).seq for n in names}) == len(names)
