"""A pool of threads made when first needed in each process: a forked child (send --once's claiming and signing)
has none of its parent's threads, so it makes its own instead of queueing work for threads that do not exist."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor


class ProcessPool:
    """Given a number of threads and their name, hand out this process's pool of them."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # a forked child has none of the pool's threads, and a lock a thread held at the fork would never be let go
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._lock = None, threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        """Return this process's pool, made on the first call in it."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            return self._pool
