"""`onss-relay run`: the long-running relay. Watch, sign, upload and poll until SIGTERM/SIGINT.

Events from the outbox only wake the loop early; a full scan runs every watch.rescan regardless.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

import structlog

from onss_relay.config import Config
from onss_relay.errors import CertificateError, PermanentRemoteError, RemoteError
from onss_relay.relay import Relay

log = structlog.get_logger(__name__)

TICK = 0.5


class Daemon:
    """Given the configuration, run every stage in one loop until stopped."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.relay = Relay(cfg, stop=self.stop, max_attempts=None)
        self._next_poll = 0.0
        self._next_scan = 0.0
        self._paused_until: dict[str, float] = {}

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("stopping", signal=signal.Signals(signum).name)
            self.stop.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> int:
        log.info("relay_started", outbox=str(self.relay.spool.outbox), transport=self.cfg.remote.transport)
        observer = self._start_observer()
        try:
            while not self.stop.is_set():
                self.step()
                self.wake.wait(TICK)
                self.wake.clear()
        finally:
            if observer is not None:
                observer.stop()
            self.relay.close()
        log.info("relay_stopped")
        return 0

    def step(self) -> None:
        """Run each stage once if it is due and not paused by a permanent error."""
        now = time.monotonic()
        self.relay.outbox.scan()
        self._guard("sign", self.relay.signer.sign_queued)
        self._guard("upload", self._upload)
        if now >= self._next_poll:
            self._next_poll = now + self.cfg.poll.interval
            self._guard("poll", self.relay.poll_once)

    def _upload(self) -> None:
        report = self.relay.uploader.upload_pending()
        if report.error:
            raise report.error

    def _guard(self, stage: str, fn: object) -> None:
        now = time.monotonic()
        if self._paused_until.get(stage, 0) > now:
            return
        try:
            fn()  # type: ignore[operator]
        except (PermanentRemoteError, CertificateError) as e:
            log.error("stage_paused", stage=stage, error=str(e), retry_in_s=300)
            self._paused_until[stage] = now + 300
        except RemoteError as e:
            log.warning("stage_retry", stage=stage, error=str(e))
            self._paused_until[stage] = now + 5

    def _start_observer(self) -> object | None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            return None
        wake = self.wake

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                wake.set()

        observer = Observer()
        observer.schedule(Wake(), str(self.relay.spool.outbox), recursive=False)
        observer.daemon = True
        observer.start()
        return observer
