"""`check`'s lines where its output is the systemd journal (`ExecStartPre`): one JSON log line each, with its
syslog priority, like every other line there (the README's `jq` recipe and `journalctl -p` read them); on a
terminal or into a pipe or file they stay the ✓/✗/! lines a person or script reads."""

from __future__ import annotations

import io
from typing import TextIO

import structlog

from onss_relay.log import stderr_is_journal

log = structlog.get_logger("onss_relay.check")

MARKS = {"✓": ("check_passed", "info"), "✗": ("check_failed", "error"), "!": ("check_warning", "warning")}


class CheckLinesAsLog(io.StringIO):
    """A text stream that turns each whole line written to it into a log event: ✓ `check_passed` (info), ✗
    `check_failed` (error), ! `check_warning` (warning), any other `check_note` (info), with the line's text
    (in `error` for a failed or warned check)."""

    def write(self, text: str) -> int:
        """Given text, log each whole line in it (a partial line waits for its end); return its length."""
        pending = self.getvalue() + text
        *lines, rest = pending.split("\n")
        self.seek(0)
        self.truncate()
        super().write(rest)
        for line in filter(None, lines):
            _log_line(line)
        return len(text)


def _log_line(line: str) -> None:
    """Given one of check's lines, log it: a failed or warned check's text as its `error` (what the README's `jq`
    recipe reads, as for every command error), a passed check's or a note's as `line` (a note without its "- ")."""
    event, level = MARKS.get(line[:1], ("check_note", "info"))
    if line[:1] in MARKS:
        text = line[1:].strip()
        field = "error" if level in ("error", "warning") else "line"
    else:
        text, field = line.strip().removeprefix("- "), "line"
    getattr(log, level)(event, **{field: text})


def check_output(stdout: TextIO) -> TextIO:
    """Given the process's stdout, return where `check` writes its lines: log events when stdout is the journal
    ($JOURNAL_STREAM), else stdout itself."""
    return CheckLinesAsLog() if stderr_is_journal(stdout) else stdout
