"""What the on_result hook ran for, kept across restarts in <root>/hook/: told/<GO> holds the last state of a
set the hook finished running for, due/<GO> a run queued and not finished yet. A restart runs the due ones again
and never runs the hook twice for a state told; a crash between the hook's end and its record runs it again
(at least once, never lost).

Retention prunes the told records of sets past `retention.results_days` with their final answer (as results/
are). hook/told-pruned keeps the horizon that stands for them: the highest change counter of a set whose record
was pruned, and the latest time one was last written. A set with no record, no run due and not changed since
(its counter and its time at or below them) was told the state it still has; a set changed since is told its
new state."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from onss_relay.durable import atomic_write

Told = tuple[str, int, bool]  # a set's state, its notifications, overdue or not: what the hook was told


class HookRecord:
    """Given the spool root, keep which state of each set the hook was told (or is about to be) durably."""

    def __init__(self, root: Path) -> None:
        self.told_dir, self.due_dir = root / "hook" / "told", root / "hook" / "due"
        self.told_dir.mkdir(parents=True, exist_ok=True)
        self.due_dir.mkdir(parents=True, exist_ok=True)
        self.horizon_path = root / "hook" / "told-pruned"
        self.horizon = _read_horizon(self.horizon_path)

    def told(self, go_name: str) -> Told | None:
        """Given a set, return the state the hook last finished running for, or None."""
        return _read(self.told_dir / go_name)

    def due(self, go_name: str, told: Told) -> None:
        """Given a set and the state its queued run is about, record that run as due (before it is queued)."""
        atomic_write(self.due_dir / go_name, json.dumps(told).encode())

    def ran(self, go_name: str, told: Told) -> None:
        """Given a set and the state the hook just finished running for, record it as told, then the run as no
        longer due (unless a newer run of that set is due meanwhile)."""
        atomic_write(self.told_dir / go_name, json.dumps(told).encode())
        if _read(self.due_dir / go_name) == told:
            self.forget_due(go_name)

    def forget_due(self, go_name: str) -> None:
        """Given a set, drop its due run (it was run, or its set is gone)."""
        with contextlib.suppress(FileNotFoundError):
            (self.due_dir / go_name).unlink()

    def pruned(self, go_name: str, change: int, updated_at: float) -> bool:
        """Given a set that has no told record, its change counter and when it was last written, return whether
        retention pruned its record: no run of it is due and it has not changed since (both at or below the
        horizon: a journal restored from a backup gives counters out again, never times already past)."""
        change_max, written_max = self.horizon
        return change <= change_max and updated_at <= written_max and not (self.due_dir / go_name).exists()

    def prune_told(self, final: list[tuple[str, Told, int, float]]) -> int:
        """Given final sets past retention (name, the state the hook would be told, change counter, last
        written), remove the told record of each that holds that state with no run due, after raising the
        horizon to them (durably first: a crash between leaves records that still count); return how many."""
        gone = [f for f in final if self.told(f[0]) == f[1] and not (self.due_dir / f[0]).exists()]
        if not gone:
            return 0
        horizon = (max(self.horizon[0], *(f[2] for f in gone)), max(self.horizon[1], *(f[3] for f in gone)))
        if horizon != self.horizon:
            atomic_write(self.horizon_path, json.dumps(horizon).encode())
            self.horizon = horizon
        for name, *_ in gone:
            (self.told_dir / name).unlink(missing_ok=True)
        return len(gone)

    def pending(self) -> list[str]:
        """Return the sets whose run was due when the relay stopped (killed, or the hook still running)."""
        return sorted(p.name for p in self.due_dir.iterdir() if not p.name.startswith("."))


def _read(path: Path) -> Told | None:
    """Given a record file, return the state it holds, or None when there is none (or it cannot be read)."""
    try:
        state, notifications, late = json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        return None
    return str(state), int(notifications), bool(late)


def _read_horizon(path: Path) -> tuple[int, float]:
    """Given hook/told-pruned, return the horizon it holds: the highest change counter and last-written time of
    the sets whose record was pruned ((0, 0.0) when there is none or it cannot be read)."""
    try:
        change, written = json.loads(path.read_text())
        return int(change), float(written)
    except (OSError, ValueError, TypeError):
        return 0, 0.0
