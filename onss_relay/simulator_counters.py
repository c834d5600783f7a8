"""The simulator's answer numbers per day and environment, reserved durably a block at a time before any answer
of that block is written: a simulator killed half way (SIGKILL) never hands out a number again, so no answer
file of a run is ever overwritten by the next one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from onss_relay.durable import atomic_write

RESERVED_AT_ONCE = 100  # numbers reserved by one durable write: a killed run skips at most these


class AnswerCounters:
    """Given the file holding the reserved numbers and the counts a clean run saved, hand out answer numbers."""

    def __init__(self, path: Path, saved: dict[str, int]) -> None:
        self.path = path
        try:
            self.reserved: dict[str, int] = json.loads(path.read_text())
        except FileNotFoundError:
            self.reserved = {}
        # a run killed after its reservation: start past everything it may have used
        self.used = {key: max(saved.get(key, 0), self.reserved.get(key, 0)) for key in saved | self.reserved}

    def next(self, key: str) -> int:
        """Given a day and environment ("YYYYMMDD.E"), return its next answer number, reserving a block of them
        durably first when the reserved ones are spent."""
        n = self.used.get(key, 0) + 1
        if n > self.reserved.get(key, 0):
            self.reserved[key] = n + RESERVED_AT_ONCE - 1
            atomic_write(self.path, json.dumps(self.reserved).encode())
        self.used[key] = n
        return n

    def settle(self) -> None:
        """At the end of a clean run, release the numbers reserved and not used (the next run goes on from the
        last one used)."""
        if self.reserved != self.used:
            self.reserved = dict(self.used)
            atomic_write(self.path, json.dumps(self.reserved).encode())


class AnsweredSets:
    """Given a file, the sets a run answered since the simulator's state was last saved, one line each (the GO
    name, its folder and the files to take away), appended durably once the set's answers are written and
    before its files leave IN*: a run killed between the two takes them away at the next start without
    answering again, and a name answered by a killed run stays a name already seen (ACRF-133)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, str, list[str]]]:
        """Return (folder, GO name, files to take away) of each set logged; a last line cut by a kill is left."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                folder, go, names = json.loads(line)
            except ValueError:
                continue
            out.append((str(folder), str(go), [str(n) for n in names]))
        return out

    def add(self, folder: str, go: str, names: list[str]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps([folder, go, names]) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
