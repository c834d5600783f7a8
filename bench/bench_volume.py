"""Volume (issue 29): N declarations through the local transport with their answers, then a year of history.

Steps, each the real CLI in its own process (wall time, peak RSS of the largest process and PSS of the process tree:
bench/volume_steps.py), each stopped after --limit minutes when given: drop N 2 KB declarations, `send --once`,
`simulate --once`, `poll --once` (progress and rate every 30 s: a rate falling with the count is a step slower than
linear); the journal's size, files and MB in results/, inbox/ and sent/; then the journal grown to HISTORY sets
(bench/volume_journal.py) and the latency of `status`, `status NAME`, `status --json`, `status TICKET`,
`send --once` with nothing to send, and the start of `run` (to READY). Baselines: the same commands on the
journal before it grew (N sets), and for the poll step `poll --once` of the code on /work/main when given
(--baseline-tree DIR: that tree's onss_relay, before this change).

Run: python3 bench/bench_volume.py [--quick] [--n N] [--history H] [--poll-files F] [--limit MINUTES] [--json FILE]
     [--baseline-tree DIR] [--only-poll | --skip-poll] [--without-go (the poll figure with answers whose GO is not there)]
Sizes: the issue's (100,000 declarations, 500,000 sets, 100,000 answer files: hours on 2 CPUs); --quick 300
declarations, 50,000 sets, 1,500 answer files (bench/run --quick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import world as new_world  # noqa: E402
from volume_journal import grow  # noqa: E402
from volume_steps import Step, count, rates, run_step, usage  # noqa: E402

from onss_relay import identity  # noqa: E402
from onss_relay.simulator import response_sequence  # noqa: E402
from onss_relay.transport.local import make_remote_home  # noqa: E402
from tests.conftest import SIGNING_PASSWORD, fi_name, write_config  # noqa: E402


def world(root: Path) -> Path:
    """Make a relay folder with a local transport, keys and config; return the config path."""
    (root / "keys").mkdir(parents=True)
    identity.self_signed_identity(root / "keys", "Bench Payroll", password=SIGNING_PASSWORD.encode())
    (root / "keys" / "signer.pass").write_text(SIGNING_PASSWORD)
    for f in (root / "keys").iterdir():
        f.chmod(0o600)
    make_remote_home(root / "remote")
    return write_config(root, '\n[metrics]\nlisten = ""\n')


def declaration_name(i: int) -> str:
    """Given i from 1, return the i-th declaration's name of one sender's day in T: sequences 00001 to 99999, then
    Z and 4 characters of 0-9A-Z (the grammar's 5 characters; a day of one sender holds more than 99,999 sets
    only with letters: `seq:05d` wrote a 6-digit name at 100,000, quarantined, and send --once exited 1)."""
    seq = f"{i:05d}" if i < 100_000 else "Z" + response_sequence(i - 99_999)[1:]
    return fi_name(1, "T").replace(".00001.", f".{seq}.")


def drop(outbox: Path, n: int) -> None:
    outbox.mkdir(parents=True, exist_ok=True)
    body = (b"<DmfA>" + b"x" * 2048)[: 2048 - 9] + b"</DmfA>\r\n"
    for i in range(1, n + 1):
        (outbox / declaration_name(i)).write_bytes(body)


def seed_answers(remote: Path, files: int, go: bool = True) -> None:
    """Write files/3 answer triples (ACRF of sets this relay never sent) in OUTTEST; without ``go``, files/2 pairs
    (FO, FS) whose GO is not there yet."""
    from onss_relay.simulator import Verdict, acrf_xml

    out = remote / "OUTTEST"
    data = acrf_xml(Verdict("GO.DMFA.999998.20261130.00001.T.1", "INTEST", (), "0TICKET000001"))
    for i in range(1, files // (3 if go else 2) + 1):  # sequence 00000 is outside the grammar (left as suspicious)
        base = f"ACRF.999999.20261130.{i:05X}.T"
        (out / f"FO.{base}").write_bytes(data)
        (out / f"FS.{base}").write_bytes(b"MIIB" * 20)
        if go:
            (out / f"GO.{base}").write_bytes(b"")


def figure(name: str, unit: str, relay: float, baseline: float, baseline_name: str, lower: bool) -> dict[str, object]:
    """One figure, printed at once (a long run shows its steps as they end)."""
    ratio = baseline / max(relay, 1e-9) if lower else relay / max(baseline, 1e-9)
    f = {
        "name": name,
        "unit": unit,
        "relay": relay,
        "baseline": baseline,
        "ratio": ratio,
        "baseline_name": baseline_name + (" (ratio: baseline/relay)" if lower else ""),
    }
    print(
        f"{f['name']:<56} relay {relay:>10.2f} {unit:<8} baseline {baseline:>10.2f}   ratio {ratio:>6.2f}x"
        f"  ({f['baseline_name']})",
        flush=True,
    )
    return f


def poll_memory(root: Path, files: int, baseline_tree: Path | None, go: bool = True) -> list[dict[str, object]]:
    """Peak RSS of `poll --once` over ``files`` answer files, this tree and (when given) the baseline tree. Without
    ``go`` (answers whose GO is not there yet: taken once their sizes held across two polls) two polls run, the
    first only seeing them; the peak is the larger of the two, the time the second's."""
    out = []
    results = {}
    for label, tree in (("relay", REPO), ("baseline", baseline_tree)):
        if tree is None:
            continue
        d = root / f"poll-{label}"
        cfg = world(d)
        seed_answers(d / "remote", files, go)
        first = None if go else run_step(["poll", "--once", "--config", str(cfg)], tree)
        step = run_step(["poll", "--once", "--config", str(cfg)], tree)
        results[label] = (step.seconds, max(step.rss_mb, first.rss_mb if first else 0.0))
        print(f"{label}: poll --once RSS {first.rss_mb if first else 0:.1f} then {step.rss_mb:.1f} MB", flush=True)
    relay, base = results["relay"], results.get("baseline", results["relay"])
    name = "the code before issue 29 (--baseline-tree)" if baseline_tree else "same (no baseline tree given)"
    what = f"{files} answer files" + ("" if go else " without GO")
    out.append(figure(f"peak RSS, poll --once of {what}", "MB", relay[1], base[1], name, True))
    out.append(figure(f"poll --once of {what}, files/s", "files/s", files / relay[0], files / base[0], name, False))
    return out


QUICK = {"n": 300, "history": 50_000, "poll_files": 1_500}  # bench/run --quick: about 2 minutes
FULL = {"n": 100_000, "history": 500_000, "poll_files": 100_000}  # the volume: hours on 2 CPUs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int)
    ap.add_argument("--history", type=int)
    ap.add_argument("--poll-files", type=int)
    ap.add_argument("--baseline-tree", type=Path)
    ap.add_argument("--only-poll", action="store_true", help="only the poll memory figure")
    ap.add_argument("--skip-poll", action="store_true", help="not the poll memory figure")
    ap.add_argument("--without-go", action="store_true", help="the poll memory figure with answers without GO")
    ap.add_argument("--limit", type=float, help="minutes after which a step gets SIGTERM (its figures say so)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n = args.n or (QUICK if args.quick else FULL)["n"]
    history = (QUICK if args.quick else FULL)["history"] if args.history is None else args.history
    poll_files = args.poll_files or (QUICK if args.quick else FULL)["poll_files"]
    limit = args.limit * 60 if args.limit else None
    root = new_world("onss-volume-")
    figures: list[dict[str, object]] = []
    try:
        if not args.skip_poll:
            figures += poll_memory(root, poll_files, args.baseline_tree, not args.without_go)
        if not args.only_poll:
            figures += pipeline(root / "relay", n, history, limit)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


STEP_FIGURES = {
    "send": ("declarations", "decl/s"),
    "simulate": ("declarations answered", "decl/s"),
    "poll": ("answer files", "files/s"),
}


def step_figures(what: str, cmd: str, done: int, step: Step) -> list[dict[str, object]]:
    """Given a step and how many items it did, return its throughput and peak RSS figures (and print its rates)."""
    unit, per_s = STEP_FIGURES[what]
    stopped = f" (stopped at its limit after {step.seconds:.0f} s)" if step.stopped else ""
    if step.samples:
        print(f"    {what}: rate per interval {rates(step.samples)} /s", flush=True)
    rate = done / step.seconds
    return [
        figure(f"{cmd}, {done} {unit}{stopped}, per s", per_s, rate, rate, "-", False),
        figure(f"peak RSS, {cmd} of {done} {unit}, largest process", "MB", step.rss_mb, step.rss_mb, "-", True),
        figure(f"peak RSS, {cmd} of {done} {unit}, process tree (PSS)", "MB", step.tree_mb, step.tree_mb, "-", True),
    ]


def footprint(d: Path, n: int) -> list[dict[str, object]]:
    """The spool after the pipeline: journal size, and files and MB in results/, inbox/ and sent/."""
    journal = d / "spool" / "journal.db"
    mb = journal.stat().st_size / 1e6
    figs = [figure(f"journal size, {n} sets answered", "MB", mb, mb, "-", True)]
    for folder in ("results", "inbox", "sent"):
        files, size = usage(d / "spool" / folder)
        figs.append(figure(f"{folder}/ after {n} sets: {files} files", "MB", size, size, "-", True))
    return figs


def pipeline(d: Path, n: int, history: int, limit: float | None) -> list[dict[str, object]]:
    """Send ``n`` declarations, answer them with the simulator, poll the answers (each step stopped after ``limit``
    seconds when given), measure the spool, then grow the journal to ``history`` sets and time the commands a
    person runs on it. Return the figures."""
    cfg = world(d)
    c = ["--config", str(cfg)]
    drop(d / "spool" / "outbox", n)
    remote = d / "remote"
    figs = []
    step = run_step(["send", "--once", *c], REPO, limit, lambda: count(remote / "INTEST", "GO."))
    sent = count(remote / "INTEST", "GO.")
    figs += step_figures("send", "send --once", sent, step)
    step = run_step(["simulate", "--once", *c], REPO, limit, lambda: count(remote / "OUTTEST", "GO."))
    figs += step_figures("simulate", "simulate --once", sent - count(remote / "INTEST", "GO."), step)
    files = count(remote / "OUTTEST")
    step = run_step(["poll", "--once", *c], REPO, limit, lambda: files - count(remote / "OUTTEST"))
    figs += step_figures("poll", "poll --once", files - count(remote / "OUTTEST"), step)
    figs += footprint(d, sent)
    if history:
        figs += year(d, c, n, history)
    return figs


def year(d: Path, c: list[str], n: int, history: int) -> list[dict[str, object]]:
    """Grow the journal of the pipeline to ``history`` sets; time the commands before and after."""
    journal = d / "spool" / "journal.db"
    some = next(p.name for p in (d / "spool" / "results").iterdir() if p.name.startswith("GO."))
    ticket = json.loads((d / "spool" / "results" / some).read_text())["ticket"]
    before = commands(c, some[:-5], ticket)
    grow(journal, history)
    (d / "spool" / "results.cursor").write_text(f"{_last_change(journal)}\n")  # a year's results were written
    mb = journal.stat().st_size / 1e6
    figs = [figure(f"journal size, {history} sets", "MB", mb, mb, "-", True)]
    after = commands(c, some[:-5], ticket)
    for what, t in after.items():
        figs.append(figure(f"{what}, {history} sets in the journal", "s", t, before[what], f"same with {n} sets", True))
    return figs


def _last_change(journal: Path) -> int:
    import sqlite3

    db = sqlite3.connect(journal)
    try:
        return int(db.execute("SELECT MAX(change_seq) FROM sets").fetchone()[0])
    finally:
        db.close()


def commands(c: list[str], name: str, ticket: str, repeat: int = 3) -> dict[str, float]:
    """Wall time of each command a person runs (median of ``repeat``), start-ups included."""
    runs = {
        "status": (["status", *c], None),
        "status NAME": (["status", name, *c], None),
        "status --json": (["status", "--json", *c], None),
        "status TICKET": (["status", ticket, *c], None),
        "send --once, nothing to send": (["send", "--once", *c], None),
        "run, start until relay_started": (["run", *c], "relay_started"),
    }
    out = {}
    for what, (cmd, until) in runs.items():
        times = sorted(run_step(cmd, REPO, until=until).seconds for _ in range(repeat))
        out[what] = times[len(times) // 2]
    return out


if __name__ == "__main__":
    main()
