"""Logging with structlog: readable console lines on a terminal, JSON lines otherwise (journald, Docker)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str = "info", json_output: bool | None = None, stream: TextIO | None = None) -> None:
    """Given a level name, route structlog and stdlib logging to stderr, as JSON unless stderr is a terminal."""
    stream = stream or sys.stderr
    if json_output is None:
        json_output = not getattr(stream, "isatty", lambda: False)()
    numeric = getattr(logging, level.upper())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        stream=stream,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("paramiko").setLevel(max(numeric, logging.WARNING))
    # paramiko's transport thread logs a traceback when a connection given up during its banner (a connect
    # timeout on a stalled path) is closed under it; the relay reports every connection failure in one sentence
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
    # watchdog logs an ERROR when its inotify thread is stopped while events arrive: shutdown noise
    logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
