"""The `onss-relay` command line: sub-commands, global options, exit codes and one-sentence errors."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from onss_relay import __version__
from onss_relay.config import Config, default_config_path, load_config
from onss_relay.errors import (
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WAITING,
    EXIT_WORK_FAILED,
    RelayError,
    SignatureError,
    describe_os_error,
)
from onss_relay.log import LEVELS, say_error, setup_logging

if TYPE_CHECKING:
    from onss_relay.pipeline import Relay

T = TypeVar("T")

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
    parser = argparse.ArgumentParser(prog="onss-relay", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"onss-relay {installed_version()}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
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
    p.add_argument("--limit", type=int, default=50, help="how many recent sets (default: 50)")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(
        "debug" if args.debug else ("error" if args.command == "demo" and args.log_level == "info" else args.log_level)
    )
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader gone (`status | head`) shows here, not at exit
        return code
    except BrokenPipeError:  # the reader has what it wanted: quiet, and nothing more written
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one sentence for the person, the traceback with --debug
        if args.debug:
            traceback.print_exc()
        sentence, code = _sentence(e)
        say_error(sentence, code, args.command)
        return code


def _sentence(e: Exception) -> tuple[str, int]:
    """Given what stopped a command, return the sentence a person reads and the exit code."""
    if isinstance(e, RelayError):
        return str(e), e.exit_code
    if isinstance(e, OSError):  # a local problem no stage turned into a sentence: still one sentence
        return describe_os_error(e), EXIT_LOCAL
    if isinstance(e, sqlite3.Error):
        return f"the journal cannot be used: {e} (run with --debug for details)", EXIT_LOCAL
    return f"unexpected error {e!r}; run again with --debug for details and report it", EXIT_WORK_FAILED  # a bug


def _config(args: argparse.Namespace) -> Config:
    return load_config(default_config_path(args.config))


def cmd_demo(args: argparse.Namespace) -> int:
    from onss_relay.commands.demo import run_demo

    return run_demo(args.dir, sys.stdout)


def cmd_run(args: argparse.Namespace) -> int:
    from onss_relay.commands.check_access import refuse_unreadable
    from onss_relay.daemon import Daemon

    cfg = _config(args)
    refuse_unreadable(cfg)  # a secret it cannot read stops it in one sentence, never runs it unhealthy
    daemon = Daemon(cfg)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_init(args: argparse.Namespace) -> int:
    from onss_relay.commands.init import init_directory

    return init_directory(args.dir, sys.stdout)


def _once(args: argparse.Namespace, what: str, action: Callable[[Relay], T]) -> T:
    """Given a one-shot command, run it on the spool's relay while holding the spool lock (refused if a daemon has it)."""
    from onss_relay.pipeline import Relay
    from onss_relay.spool import SpoolLock

    cfg = _config(args)
    lock = SpoolLock(cfg.paths.root)
    lock.acquire_or_refuse(what)
    relay = Relay(cfg)
    try:
        return action(relay)
    finally:
        relay.close()
        lock.release()


def _quarantined(sets: int, files: int) -> str:
    """Given the sets given up and the files moved to failed/ in a run, say both (never '0' when either is not)."""
    if sets:
        return f"quarantined {sets} set(s) ({files or 'no'} file(s) in failed/)"
    return f"quarantined {files} file(s)" if files else "quarantined 0"


def cmd_send(args: argparse.Namespace) -> int:
    report = _once(args, "send --once", lambda relay: relay.send_once())
    waiting = report.upload.waiting
    uncertain = f", {len(waiting)} uncertain (waiting for the quiet period)" if waiting else ""
    print(
        f"sent {len(report.upload.sent)} set(s), {_quarantined(report.sets_quarantined, report.files_quarantined)}{uncertain}"
    )
    for line in waiting:
        print(f"onss-relay: {line}", file=sys.stderr)
    if report.upload.error:
        print(f"onss-relay: {report.upload.error}", file=sys.stderr)
        return report.upload.error.exit_code
    if report.failed:
        return EXIT_WORK_FAILED
    return EXIT_WAITING if waiting else EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    from onss_relay.commands.poll import poll_until_stopped, summary

    print(summary(_once(args, "poll --once", poll_until_stopped)))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    from onss_relay.commands.submit import submit

    names = submit(_config(args), args.files, args.app, args.env, args.date, args.parts)
    print("\n".join(names))
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from onss_relay.commands.status import as_go, set_detail, spool_view, status_json, status_table
    from onss_relay.commands.status_wait import UNSENT, why_waiting
    from onss_relay.journal import open_journal_at
    from onss_relay.spool import Spool

    cfg = _config(args)
    if args.health:
        return _health(cfg)
    if not cfg.paths.journal_path.exists():
        print(f"no journal yet at {cfg.paths.journal_path}: nothing was sent from this spool")
        return EXIT_OK
    journal = open_journal_at(cfg.paths.journal_path, readonly=True)
    try:
        view = spool_view(Spool(cfg.paths), journal)
        waiting = why_waiting(cfg.paths.root)
        if args.json:
            doc = status_json(journal, args.name, args.limit, cfg.poll, view)
            print(json.dumps(doc | ({"waiting": waiting} if not args.name else {}), indent=2))
            return EXIT_OK
        if args.name:
            detail = set_detail(journal, args.name)
            if detail is None:
                print(f"onss-relay: no set named {args.name} in {cfg.paths.journal_path}", file=sys.stderr)
                return EXIT_WORK_FAILED
            row = journal.get_set(as_go(args.name)) if waiting else None
            print(detail + (f"\nwaiting:     {waiting}" if row is not None and row.state in UNSENT else ""))
            return EXIT_OK
        table = status_table(journal, args.limit, cfg.poll, view)
        unsent = sum(n for state, n in journal.counts().items() if state in UNSENT)
        print(table + (f"\n\n{unsent} set(s) not sent yet wait: {waiting}" if waiting and unsent else ""))
        return EXIT_OK
    finally:
        journal.close()


def _health(cfg: Config) -> int:
    """Exit 0 when the running daemon wrote a healthy health.json in the last minute (Docker HEALTHCHECK)."""
    from onss_relay.commands.status import daemon_health

    healthy, why = daemon_health(cfg.paths.root)
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return EXIT_OK if healthy else EXIT_WORK_FAILED


def cmd_requeue(args: argparse.Namespace) -> int:
    from onss_relay.commands.requeue import requeue

    return requeue(_config(args), args.name, sys.stdout, force=args.force)


def cmd_backup(args: argparse.Namespace) -> int:
    from onss_relay.commands.backup import backup, restore

    cfg = _config(args)
    return backup(cfg, args.dest, sys.stdout) if args.command == "backup" else restore(cfg, args.src, sys.stdout)


def cmd_check(args: argparse.Namespace) -> int:
    from onss_relay.commands.check import run_checks

    return run_checks(_config(args), sys.stdout, local_only=args.local)


def cmd_sign(args: argparse.Namespace) -> int:
    from onss_relay import signature
    from onss_relay.durable import atomic_write
    from onss_relay.identity import load_signing_identity
    from onss_relay.names import fs_name_for, parse_name

    cfg = _config(args)
    if args.output is None:
        try:
            args.output = args.fi.with_name(str(fs_name_for(parse_name(args.fi.name))))
        except ValueError:
            args.output = args.fi.with_name(args.fi.name + ".fs")
    content = signature.fs_content_for(load_signing_identity(cfg), args.fi, cfg.signing.digest, cfg.signing.layout)
    atomic_write(args.output, content)
    print(args.output)
    return EXIT_OK


def cmd_certificate(args: argparse.Namespace) -> int:
    from onss_relay.commands.certificate import write_certificate

    return write_certificate(_config(args), args.output, sys.stdout)


def cmd_verify(args: argparse.Namespace) -> int:
    from onss_relay import signature

    try:
        v = signature.verify(args.fi, args.fs.read_bytes())
    except SignatureError as e:
        print(f"invalid: {args.fs}: {e}")
        return EXIT_WORK_FAILED
    except OSError as e:
        print(f"onss-relay: {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    when = f" at {v.signing_time:%Y-%m-%d %H:%M:%S} UTC" if v.signing_time else ""
    print(f"valid: {args.fs.name} signs {args.fi.name} ({v.digest}), signed by {v.subject}{when}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from onss_relay.simulator import Simulator

    cfg = _config(args)
    if cfg.remote.transport != "local":
        print(
            'onss-relay: simulate needs remote.transport = "local" (the simulator answers in that folder)',
            file=sys.stderr,
        )
        return EXIT_USAGE
    base = Path(cfg.remote.base_dir)
    if not base.is_absolute() and cfg.source:
        base = cfg.source.parent.absolute() / base
    sim = Simulator(base, cfg.sender.number)
    while True:
        for v in sim.process():
            print(
                f"{v.go_name}: {'accepted ' + v.ticket if v.accepted else 'refused ' + ' '.join(v.errors)}", flush=True
            )
        if args.once:
            return EXIT_OK
        time.sleep(args.interval)


COMMANDS = {
    "run": cmd_run,
    "send": cmd_send,
    "poll": cmd_poll,
    "submit": cmd_submit,
    "status": cmd_status,
    "check": cmd_check,
    "requeue": cmd_requeue,
    "sign": cmd_sign,
    "certificate": cmd_certificate,
    "verify": cmd_verify,
    "simulate": cmd_simulate,
    "demo": cmd_demo,
    "init": cmd_init,
    "backup": cmd_backup,
    "restore": cmd_backup,
}

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
