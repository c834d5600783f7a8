"""The upload stage's connections: opened ahead of need, kept warm between sets, proven alive before a set's
first request goes on one, closed after ``remote.keep_open`` with nothing to send.

A connection kept idle can die without a word (a NAT entry expired, the server's process killed): a set whose
requests went on it would be left uncertain for a quiet period for nothing. So a kept connection is used as it
is only while it answered within ``PROVEN_FRESH`` seconds; otherwise it is asked something cheap first
(``Transport.alive``: one round trip) and replaced when it does not answer. ``freshen`` does that ahead of
need, when the outbox stirs, and ``tend`` every ``remote.keepalive`` while idle, so a set seldom waits for it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable

import structlog

from onss_relay.transport.base import Transport

log = structlog.get_logger(__name__)

PROVEN_FRESH = 1.0  # seconds: a connection that answered this recently is used without asking it again


def close_quietly(t: Transport) -> None:
    with contextlib.suppress(Exception):
        t.close()


@dataclasses.dataclass
class Kept:
    """A connection kept with nothing to send: idle since when, and when the server last answered on it."""

    transport: Transport
    since: float  # monotonic
    proven: float  # monotonic


class ConnectionPool:
    """Connections for the upload threads: one readied in the background (``warm_up``, ``freshen``), and those
    kept between rounds (``keep``), proven alive before use, until ``close_idle`` ends them."""

    def __init__(self, connect: Callable[[], Transport], fresh: float = PROVEN_FRESH) -> None:
        self.connect = connect
        self.fresh = fresh
        self._lock = threading.Lock()
        self._warm: concurrent.futures.Future[Transport] | None = None
        self._idle: list[Kept] = []

    def warm_up(self) -> None:
        """Ready a connection in the background: prove the one kept, or connect, so that the next upload finds
        it ready."""
        self._ready_ahead(connect=True)

    def freshen(self) -> None:
        """Given sets may come soon, prove the connection kept idle in the background (replacing it if it does
        not answer); open none when none is kept."""
        self._ready_ahead(connect=False)

    def _ready_ahead(self, connect: bool) -> None:
        now = time.monotonic()
        with self._lock:
            if self._warm is not None:
                return
            kept = self._idle.pop() if self._idle else None
            if kept is None and not connect:
                return
            if kept is not None and now - kept.proven < self.fresh and kept.transport.alive(ask=False):
                self._idle.append(kept)
                return
            future = self._warm = concurrent.futures.Future()
        self._ready_in_background(future, kept, kept.since if kept is not None else now)

    def _ready_in_background(
        self, future: concurrent.futures.Future[Transport], kept: Kept | None, since: float
    ) -> None:
        """Given the future standing for a connection being readied, prove ``kept`` (or connect) in a thread. An
        upload that takes the future meanwhile gets the connection; otherwise it goes back among the kept ones,
        idle since ``since`` (so keep_open still bounds it), and a failure is left for the next upload to meet."""

        def ready() -> None:
            try:
                t = self._proven_or_new(kept)
            except BaseException as e:  # an upload waiting for it connects again, with retries and reports
                with self._lock:
                    if self._warm is future:
                        self._warm = None
                future.set_exception(e)
                return
            with self._lock:
                if self._warm is future:  # nobody took it: kept like any idle connection
                    self._warm = None
                    self._idle.append(Kept(t, since, time.monotonic()))
            future.set_result(t)

        threading.Thread(target=ready, name="upload-connect", daemon=True).start()

    def _proven_or_new(self, kept: Kept | None) -> Transport:
        """Given a kept connection (or None), return it if it answers now, else a new one with its upload
        sessions opening."""
        if kept is not None:
            if kept.transport.alive():
                return kept.transport
            log.info("idle_connection_replaced", idle_s=round(time.monotonic() - kept.since))
            close_quietly(kept.transport)
        t = self.connect()
        try:
            t.prepare_uploads()
        except BaseException:
            close_quietly(t)
            raise
        return t

    def take(self) -> Transport:
        """A connection known alive: the one readied in the background, one kept that answered just now or
        answers when asked, or a new one."""
        now = time.monotonic()
        with self._lock:
            future, self._warm = self._warm, None
            kept = self._idle.pop() if self._idle and future is None else None
        if future is not None:
            with contextlib.suppress(Exception):  # connect again below, where failures are retried and reported
                return future.result()
            return self.connect()
        if kept is not None and now - kept.proven < self.fresh and kept.transport.alive(ask=False):
            return kept.transport  # answered just now and not closed since: asking again would only cost time
        if kept is not None and kept.transport.alive():
            return kept.transport
        if kept is not None:
            log.info("idle_connection_replaced", idle_s=round(now - kept.since))
            close_quietly(kept.transport)
        return self.connect()

    def keep(self, t: Transport) -> None:
        """Given a connection whose round just ended well (its last replies just read), keep it for the next."""
        now = time.monotonic()
        with self._lock:
            self._idle.append(Kept(t, now, now))

    def idle(self) -> list[Transport]:
        with self._lock:
            return [k.transport for k in self._idle]

    def tend(self, every: float) -> None:
        """Given the keepalive interval, ask each kept connection that has not answered for ``every`` seconds
        whether it is alive; one that is not is closed and replaced in the background, keeping its idle-since
        (so keep_open still bounds it)."""
        now = time.monotonic()
        with self._lock:
            due = [k for k in self._idle if now - k.proven >= every]
            self._idle = [k for k in self._idle if now - k.proven < every]
        for k in due:
            if k.transport.alive():
                k.proven = time.monotonic()
                with self._lock:
                    self._idle.append(k)
                continue
            log.info("idle_connection_replaced", idle_s=round(now - k.since))
            close_quietly(k.transport)
            with self._lock:
                if self._warm is not None:  # one is being readied already
                    continue
                future = self._warm = concurrent.futures.Future()
            self._ready_in_background(future, None, k.since)

    def close_idle(self, older_than: float = 0.0) -> None:
        """Close the connections kept with nothing to send for ``older_than`` seconds (all: 0, and the one
        readied in the background)."""
        now = time.monotonic()
        with self._lock:
            stale = [k.transport for k in self._idle if now - k.since >= older_than]
            self._idle = [k for k in self._idle if now - k.since < older_than]
            future, self._warm = (self._warm, None) if older_than <= 0 else (None, self._warm)
        if future is not None:
            with contextlib.suppress(Exception):
                stale.append(future.result())
        for t in stale:
            close_quietly(t)
