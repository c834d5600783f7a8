"""What the on_result hook ran for, kept across restarts in <root>/hook/: told/<GO> holds the last state of a
set the hook finished running for, due/<GO> a run queued and not finished yet. A restart runs the due ones again
and never runs the hook twice for a state told; a crash between the hook's end and its record runs it again
(at least once, never lost)."""

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
