"""The `onss-relay` command line: sub-commands, global options, exit codes and one-sentence errors."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from onss_relay.cli_parser import build_parser
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
from onss_relay.log import say_error, say_warning, setup_logging
from onss_relay.terminal import for_terminal

if TYPE_CHECKING:
    from onss_relay.pipeline import Relay, SendReport

T = TypeVar("T")


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
    if cfg.metrics.listen:  # the status page's secret, missing or empty: refused before any part starts
        from onss_relay.commands.check import page_access

        page_access(cfg)
    if cfg.journal.url:  # an image built without the postgres extra: one sentence, exit 2, not a crash loop
        from onss_relay.journal.postgres_db import require_psycopg

        require_psycopg(cfg.journal)
    daemon = Daemon(cfg)
    daemon.install_signal_handlers()
    return daemon.run()


def cmd_init(args: argparse.Namespace) -> int:
    from onss_relay.commands.init import init_directory

    return init_directory(args.dir, sys.stdout)


def _once(args: argparse.Namespace, what: str, action: Callable[[Relay], T], takes_over: bool = False) -> T:
    """Given a one-shot command, run it on the spool's relay while holding the relay lock (refused if a daemon
    has it); with a PostgreSQL journal its writes carry the lease's epoch, its puts, GOs and moves in the shared
    spool check the lease, and (``takes_over``: `send`) sets another relay left mid-upload are recovered only
    after the wait a daemon taking over makes (standby.wait_before_recovery)."""
    from onss_relay.errors import Fenced, JournalUnreachable
    from onss_relay.leadership import relay_lock_for
    from onss_relay.pipeline import Relay
    from onss_relay.spool import SpoolBusy
    from onss_relay.spool_identity import check_spool_identity
    from onss_relay.standby import wait_before_recovery

    cfg = _config(args)
    lock = relay_lock_for(cfg)
    if not lock.try_acquire():
        if lock.unreachable is not None:  # no relay runs: the database holding the leadership cannot be asked
            raise JournalUnreachable(f"{what} not run: {lock.unreachable}")
        raise SpoolBusy(
            f"{what} refused: a relay ({'' if cfg.journal.url else 'pid '}{lock.holder()}) is running on this spool"
            f" ({cfg.paths.root}) and does this itself; stop it first or let it work"
        )
    try:
        relay = Relay(cfg, epoch=lock.epoch)
        relay.uploader.before_put = lock.check
        relay.spool.fence = lock.check
        try:
            check_spool_identity(cfg.paths.root, relay.journal)  # a share not mounted here: refused, exit 2
            # an old leader paused right after its last lease check may still put the GO of a set it left in
            # go_sending: recovering that set at once would put a second GO
            if takes_over and not wait_before_recovery(lock, relay.journal, cfg.journal.lease, relay.stop):
                raise Fenced(f"{what}: {lock.lost() or 'stopped'} while waiting before recovering another relay's sets")
            return action(relay)
        finally:
            relay.close()
    finally:
        lock.release()


def _quarantined(sets: int, files: int) -> str:
    """Given the sets given up and the files moved to failed/ in a run, say both (never '0' when either is not)."""
    if sets:
        return f"quarantined {sets} set(s) ({files or 'no'} file(s) in failed/)"
    return f"quarantined {files} file(s)" if files else "quarantined 0"


def cmd_send(args: argparse.Namespace) -> int:
    from onss_relay.commands.poll import stop_on_signals

    def send(relay: Relay) -> SendReport:
        stop_on_signals(relay.stop)  # SIGTERM (a cron timeout, systemctl stop) ends it at a safe point, cleanly
        return relay.send_once()

    report = _once(args, "send --once", send, takes_over=True)
    waiting = report.upload.waiting
    uncertain = f", {len(waiting)} uncertain (waiting for the quiet period)" if waiting else ""
    stopped = "; stopped before the end (SIGTERM): the next send --once goes on" if report.stopped else ""
    print(
        f"sent {len(report.upload.sent)} set(s), {_quarantined(report.sets_quarantined, report.files_quarantined)}"
        f"{uncertain}{stopped}"
    )
    for line in waiting:
        say_warning(line, "send")
    if report.upload.error:
        say_error(str(report.upload.error), report.upload.error.exit_code, "send")
        return report.upload.error.exit_code
    if report.failed:
        return EXIT_WORK_FAILED
    return EXIT_WAITING if waiting else EXIT_OK


def cmd_poll(args: argparse.Namespace) -> int:
    from onss_relay.commands.poll import poll_until_stopped, summary

    print(summary(_once(args, "poll --once", poll_until_stopped)))
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    import structlog

    from onss_relay.commands.submit import submit
    from onss_relay.names import environment_note, parse_name

    names = submit(_config(args), args.files, args.app, args.env, args.date, args.parts)
    print("\n".join(names))
    if names and (note := environment_note(parse_name(names[0]))):  # said now, and in the set's result later
        structlog.get_logger(__name__).warning("declaration_warning", file=names[0], warning=note)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from onss_relay.commands.status import as_go, set_detail, spool_view, status_json, status_table
    from onss_relay.commands.status_wait import UNSENT, why_waiting
    from onss_relay.journal import journal_exists, journal_location, open_journal
    from onss_relay.spool import Spool
    from onss_relay.stages.uncertain import uncertain_wait

    cfg = _config(args)
    if args.health:
        return _health(cfg)
    if not journal_exists(cfg):
        print(f"no journal yet at {journal_location(cfg)}: nothing was sent from this spool")
        return EXIT_OK
    journal = open_journal(cfg, readonly=True)
    try:
        view = spool_view(Spool(cfg.paths), journal, cfg.watch)
        reason, uncertain = why_waiting(cfg.paths.root), uncertain_wait(journal, float(cfg.remote.quiet_period))
        waiting = reason or uncertain
        if args.json:
            doc = status_json(journal, args.name, args.limit, cfg.poll, view, cfg.paths.sent_dir)
            print(json.dumps(doc | ({"waiting": waiting} if not args.name else {}), indent=2))
            return EXIT_OK
        if args.name:
            detail = set_detail(journal, args.name, cfg.poll, cfg.paths.sent_dir)
            if detail is None:
                say_error(f"no set or ticket {args.name} in {journal_location(cfg)}", EXIT_WORK_FAILED, "status")
                return EXIT_WORK_FAILED
            row = journal.get_set(as_go(args.name)) if waiting else None
            print(for_terminal(detail + (f"\nwaiting:     {waiting}" if row and row.state in UNSENT else "")))
            return EXIT_OK
        unsent = sum(n for state, n in journal.counts().items() if state in UNSENT)
        notes = [f"{unsent} set(s) not sent yet wait: {reason}"] if reason and unsent else []
        table = status_table(journal, args.limit, cfg.poll, view)
        print(for_terminal("\n\n".join([table, *notes, *filter(None, [uncertain])])))  # names from files shown
        return EXIT_OK
    finally:
        journal.close()


def _health(cfg: Config) -> int:
    """Exit 0 when the running daemon wrote a healthy health.json in the last minute (Docker HEALTHCHECK)."""
    from onss_relay.health import daemon_health

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
    from onss_relay.commands.check_lines import check_output

    return run_checks(_config(args), check_output(sys.stdout), local_only=args.local)


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
        say_error(f"{e.filename}: {e.strerror}", EXIT_USAGE, "verify")
        return EXIT_USAGE
    when = f" at {v.signing_time:%Y-%m-%d %H:%M:%S} UTC" if v.signing_time else ""
    print(f"valid: {args.fs.name} signs {args.fi.name} ({v.digest}), signed by {v.subject}{when}")
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    import time

    from onss_relay.simulator import Simulator

    cfg = _config(args)
    if cfg.remote.transport != "local":
        say_error(
            'simulate needs remote.transport = "local" (the simulator answers in that folder)', EXIT_USAGE, "simulate"
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
