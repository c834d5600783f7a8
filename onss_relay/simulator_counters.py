"""The simulator's answer numbers per day and environment, reserved durably a block at a time before any answer
of that block is written: a simulator killed half way (SIGKILL) never hands out a number again, so no answer
file of a run is ever overwritten by the next one."""

from __future__ import annotations

import json
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
