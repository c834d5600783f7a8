"""Logging with structlog: readable console lines on a terminal, JSON lines otherwise (journald, Docker), every
line of them (the stdlib loggers of libraries and the one-sentence errors of commands too); a syslog priority
prefix (``<4>``, sd-daemon(3)) when stderr is the systemd journal, so that ``journalctl -p warning`` works;
retry storms said once when they start, once when they end, with a summary."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from onss_relay.terminal import for_terminal

LEVELS = ("debug", "info", "warning", "error")
# sd-daemon(3): "<N>" before a line written to the journal's stream sets its syslog priority
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
RETRY_EVENTS = {"stage_retry": "stage", "upload_retry": None}  # event → the field naming its stage (None: upload)
STORM_SUMMARY_EVERY = 600.0  # seconds: while a storm lasts, one attempt in this long is said, with a count

log = structlog.get_logger()
_json_output = False


def json_lines() -> bool:
    """Return whether log lines are JSON (stderr not a terminal): commands then say their errors as JSON too."""
    return _json_output


def stderr_is_journal(stream: TextIO) -> bool:
    """Given the log stream, return whether it is the systemd journal's ($JOURNAL_STREAM is its device:inode)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(expected) and expected == f"{st.st_dev}:{st.st_ino}"


class RetryStorms:
    """A structlog processor: the first retry of a stage is a warning; the next ones are debug lines (a summary
    warning every STORM_SUMMARY_EVERY s, with how many were not said); `stage_recovered` ends the storm and
    carries `retries` (attempts said and not) and `last_error`."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.storms: dict[str, tuple[float, int, str]] = {}  # stage → (last said at, attempts since, last error)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        event = event_dict.get("event")
        if event == "stage_recovered":
            storm = self.storms.pop(str(event_dict.get("stage")), None)
            if storm is not None:
                event_dict["last_error"] = storm[2]
            return event_dict
        if event not in RETRY_EVENTS:
            return event_dict
        field = RETRY_EVENTS[str(event)]
        stage = str(event_dict.get(field, "upload")) if field else "upload"
        now = time.monotonic()
        said_at, unsaid, _ = self.storms.get(stage, (None, 0, ""))
        error = str(event_dict.get("error", ""))
        if said_at is None or now - said_at >= STORM_SUMMARY_EVERY:
            self.storms[stage] = (now, 0, error)
            if said_at is not None:
                event_dict["not_said_since_last"] = unsaid
            return event_dict
        self.storms[stage] = (said_at, unsaid + 1, error)
        if self.level > logging.DEBUG:
            raise structlog.DropEvent
        event_dict["level"] = "debug"
        return event_dict


def _renderer(json_output: bool, journal: bool) -> structlog.typing.Processor:
    """Return the last processor: JSON (with a syslog priority prefix for the journal) or console lines."""
    if not json_output:
        return structlog.dev.ConsoleRenderer(colors=False)
    dumps = structlog.processors.JSONRenderer(serializer=lambda o, **kw: json.dumps(o, ensure_ascii=False, **kw))

    def render(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        line = str(dumps(logger, method, event_dict))
        return f"<{PRIORITIES.get(str(event_dict.get('level', method)), 6)}>{line}" if journal else line

    return render


# A module's `log` (structlog.get_logger) assembles a new logger at every call: ~5 µs, a line filtered out
# included (cache_logger_on_first_use stays off: setup_logging and structlog.testing.capture_logs reconfigure it).
# A loop that says one line per set binds it once (`said = log.bind()`) and says its lines through that: 0.6 µs a
# line filtered out, and the configuration of the moment the batch began. Eight lines per set on their way out.


def setup_logging(level: str = "info", json_output: bool | None = None, stream: TextIO | None = None) -> None:
    """Given a level name, route structlog and stdlib logging to stderr, as JSON unless stderr is a terminal."""
    global _json_output
    stream = stream or sys.stderr
    if json_output is None:
        json_output = not getattr(stream, "isatty", lambda: False)()
    _json_output = json_output
    numeric = getattr(logging, level.upper())
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = _renderer(json_output, json_output and stderr_is_journal(stream))
    structlog.configure(
        processors=[*shared, RetryStorms(numeric), structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(  # libraries' stdlib logging (paramiko, watchdog, warnings): the same lines
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    logging.captureWarnings(True)
    logging.getLogger("paramiko").setLevel(max(numeric, logging.WARNING))
    # paramiko's transport thread logs a traceback when a connection given up during its banner (a connect
    # timeout on a stalled path) is closed under it; the relay reports every connection failure in one sentence
    logging.getLogger("paramiko.transport").setLevel(logging.CRITICAL)
    # watchdog logs an ERROR when its inotify thread is stopped while events arrive: shutdown noise
    logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)


def say_error(sentence: str, exit_code: int, command: str | None) -> None:
    """Given a command's one-sentence error, print it on stderr: plain on a terminal, else a JSON log line."""
    if _json_output:
        log.error("command_failed", error=sentence, exit_code=exit_code, command=command)
    else:
        print(f"onss-relay: {for_terminal(sentence)}", file=sys.stderr)


def say_warning(sentence: str, command: str | None) -> None:
    """Given a command's warning sentence (its work goes on), print it on stderr: plain on a terminal, else a JSON
    log line with a warning priority."""
    if _json_output:
        log.warning("command_warning", error=sentence, command=command)  # `error`: the README's jq recipe reads it
    else:
        print(f"onss-relay: {for_terminal(sentence)}", file=sys.stderr)


def log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A library thread (watchdog's, paramiko's) that dies says so in one line, with where, not a raw traceback."""
    if args.exc_type is SystemExit:
        return
    where = ""
    tb = args.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
    structlog.get_logger(__name__).error(
        "thread_died",
        thread=args.thread.name if args.thread is not None else "?",
        error=f"{args.exc_type.__name__}: {args.exc_value}",
        where=where,
    )
