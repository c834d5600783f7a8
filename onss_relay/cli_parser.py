"""The `onss-relay` command line's grammar: sub-commands, their options and the global ones, `--version`; a
usage error is one sentence, as a JSON log line off a terminal like every other error."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from onss_relay import __version__
from onss_relay.errors import EXIT_USAGE
from onss_relay.log import LEVELS, say_error, setup_logging


class UsageParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors, off a terminal, are a JSON line with a priority (journald, Docker,
    `jq`) instead of argparse's plain usage text."""

    _argv: list[str] = []  # the arguments being parsed (set by parse_known_args)

    def error(self, message: str) -> NoReturn:
        """Given argparse's message, say it (usage text on a terminal, else one JSON line) and exit 2."""
        if sys.stderr.isatty():
            super().error(message)
        setup_logging()
        command = self.prog.split(" ", 1)[1] if " " in self.prog else self._command_in(self._argv)
        prog = f"{self.prog} {command}" if command and " " not in self.prog else self.prog
        say_error(f"{message} (see {prog} --help)", EXIT_USAGE, command)
        self.exit(EXIT_USAGE)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Given the arguments, parse them, keeping them so that an error found here names the sub-command."""
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _command_in(self, argv: list[str]) -> str | None:
        """Given the arguments, return the first that names one of this parser's sub-commands, or None: an
        unrecognized option is reported by the top parser, after the sub-command parsed what it knew."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return next((a for a in argv if a in action.choices), None)
        return None


DESCRIPTION = """Relay Belgian social security declarations (Dimona, DmfA, DRS …) to the ONSS transfer point
and bring the answers back, exactly once. Start with `onss-relay demo`."""
EPILOG = (
    "exit codes: 0 success, 1 something refused or quarantined, 2 usage or configuration error, "
    "3 remote unreachable or authentication failed, 4 local problem (disk full, permission denied, I/O error), "
    "5 (send) sets wait for the quiet period after a stalled connection: run send again after the time printed"
)


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="configuration file (default: $ONSS_RELAY_CONFIG, else /etc/onss-relay/config.toml)",
    )
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=argparse.SUPPRESS if suppress else "info",
        help="log level (default: info)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="debug logging and tracebacks on errors",
    )


def installed_version() -> str:
    """Return the installed package's version (its metadata), or the source's when it is not installed."""
    try:
        return importlib.metadata.version("onss-relay")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="onss-relay", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"onss-relay {installed_version()}")
    _global_options(parser, suppress=False)
    common = UsageParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text, epilog=EPILOG)

    add("run", "the daemon: watch the outbox, sign, upload, poll responses until SIGTERM")
    p = add("send", "claim, sign and upload everything in the outbox now, then exit")
    p.add_argument("--once", action="store_true", help="process the outbox once and exit (the default)")
    p = add("poll", "fetch responses from OUT folders once, link them to what was sent, then exit")
    p.add_argument("--once", action="store_true", help="poll once and exit (the default)")
    p = add("submit", "give file(s) the next free sequence number for today and place them in the outbox")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="declaration content (one per part)")
    p.add_argument("--app", required=True, help="application code, e.g. DMFA, DIMN")
    p.add_argument(
        "--env",
        required=True,
        choices=["R", "T", "S"],
        help="R production; T test (for DmfA only a circuit test); S declaration test (DmfA, DRS AMI)",
    )
    p.add_argument("--date", help="creation date YYYYMMDD (default: today)")
    p.add_argument("--parts", action="store_true", help="the files are the parts of one multi-part set")
    p = add("status", "show declaration sets, their states and ONSS results")
    p.add_argument("name", nargs="?", help="one set (GO or FI name): its whole history")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=_at_least_one, default=50, help="how many recent sets (default: 50)")
    p.add_argument(
        "--health",
        action="store_true",
        help="exit 0 if the running daemon reports itself healthy (for Docker HEALTHCHECK)",
    )
    p = add("check", "check configuration, key, certificate, folders and the remote; exit non-zero on any problem")
    p.add_argument(
        "--local",
        action="store_true",
        help="only what is on this machine (configuration, certificate, folders): for systemd's ExecStartPre, "
        "so that the service starts while the transfer point or the network is down",
    )
    p = add("sign", "write the detached CMS signature (FS) of a declaration file")
    p.add_argument("fi", type=Path, metavar="FI")
    p.add_argument("-o", "--output", type=Path, metavar="FS", help="output file (default: the FS name beside FI)")
    p = add(
        "certificate",
        "write the signing certificate's public part (.cer, DER) to register on the portal, and print its issuer,"
        " serial number (decimal and hexadecimal) and expiry as the portal shows them",
    )
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE.cer", help="output file (default: <signing key name>.cer here)"
    )
    p = add("verify", "verify an FS signature file against its FI (exit 0 valid, 1 invalid)")
    p.add_argument("fi", type=Path, metavar="FI")
    p.add_argument("fs", type=Path, metavar="FS")
    p = add("simulate", "run the transfer-point simulator on the folder of a `local` transport")
    p.add_argument("--once", action="store_true", help="answer what is waiting, then exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between passes (default: 1)")
    p = add("init", "create an SSH key pair and a configuration to start from, and say what to do next")
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=Path("/etc/onss-relay"),
        help="where to write them (default: /etc/onss-relay)",
    )
    p = add("requeue", "put a quarantined set back in the outbox, all its files at once, to be sent again")
    p.add_argument("name", metavar="NAME", help="a GO, FI or FS name of the set (as `status` or failed/ shows it)")
    p.add_argument(
        "--force",
        action="store_true",
        help="send it even though its content equals a set sent recently (watch.duplicate_content_days)",
    )
    p = add("backup", "copy the journal consistently (SQLite online backup), also while the daemon runs")
    p.add_argument("dest", type=Path, metavar="DEST", help="file to write (a folder: journal.db in it)")
    p = add("restore", "put a journal copy back in place (refused while a relay runs on the spool)")
    p.add_argument("src", type=Path, metavar="SRC", help="a journal written by backup")
    p = add("demo", "run the whole cycle locally against the simulator and print the results")
    p.add_argument("dir", nargs="?", type=Path, help="keep everything under DIR (default: a temporary folder)")
    return parser


def _at_least_one(text: str) -> int:
    """Given --limit's value, return it as a count of at least 1 (argparse says the error in one sentence)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} shows nothing: give 1 or more")
    return n
