"""Writers the /proc look cannot see, files that change after their claim, parts moved in with old mtimes and
declarations dropped as symbolic links (issue 22, items 5 to 7). Black-box where the fault is user-visible:
the real daemon process and real writers as other processes and another user."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from tests.conftest import fi_name
from tests.fake_transport import FakeTransport
from tests.helpers import Daemon, run_cli, state_of, wait_log, wait_until

# a writer running as nobody (another user than the relay), allowed into the test's folders all the same
AS_NOBODY = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=+dac_override,+dac_read_search",
    "--ambient-caps=+dac_override,+dac_read_search",
]
# the relay as the shipped unit runs it (ProtectProc=invisible): other users' /proc entries are closed to it
PROC_BLIND = ["setpriv", "--bounding-set", "-sys_ptrace"]


def go_of(fi: str) -> str:
    return "GO" + fi[2:-2]


def reason_of(cfg: Config, name: str) -> dict[str, str]:
    return json.loads((cfg.paths.failed_dir / f"{name}.reason.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def daemon(relay_dir: Path) -> Iterator[Daemon]:
    d = Daemon(relay_dir / "config.toml", relay_dir / "daemon.log", {"ONSS_RELAY__WATCH__SETTLE": "1s"}, True)
    d.wrapper = PROC_BLIND
    d.start()
    assert wait_log(d.log, '"watching"'), d.log.read_text()[-2000:]
    yield d
    assert d.stop() == 0


@pytest.mark.slow
def test_a_writer_of_another_user_holding_its_file_open_is_never_sent_half_written(
    relay_dir: Path, daemon: Daemon
) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    fi = cfg.paths.outbox_dir / fi_name(1)
    script = f"exec 3>{fi}; echo head >&3; sleep 4; echo tail >&3"  # not XML: no well-formedness wait
    subprocess.run([*AS_NOBODY, "sh", "-c", script], check=True, timeout=30)
    assert wait_until(lambda: state_of(daemon.config, go_of(fi.name)) == State.SENT, 20), daemon.log.read_text()
    whole = b"head\ntail\n"
    assert (relay_dir / "remote" / "INTEST" / fi.name).read_bytes() == whole
    [archived] = cfg.paths.sent_dir.rglob(fi.name)
    assert archived.read_bytes() == whole


@pytest.mark.slow
def test_a_writer_that_appends_after_its_file_was_sent_loses_nothing_and_is_told(
    relay_dir: Path, daemon: Daemon
) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    fi = cfg.paths.outbox_dir / fi_name(1)
    subprocess.run([*AS_NOBODY, "sh", "-c", f"echo head > {fi}"], check=True, timeout=30)
    assert wait_until(lambda: state_of(daemon.config, go_of(fi.name)) == State.SENT, 20), daemon.log.read_text()
    assert wait_until(lambda: not fi.exists(), 10)  # released: the writer's next `>>` makes a new file
    subprocess.run([*AS_NOBODY, "sh", "-c", f"echo tail >> {fi}"], check=True, timeout=30)
    kept = [cfg.paths.failed_dir / f"{fi.name}.reason.json", cfg.paths.failed_dir / fi.name]
    assert wait_until(lambda: all(p.exists() for p in kept), 10)  # the reason and the rest, whichever comes first
    [archived] = cfg.paths.sent_dir.rglob(fi.name)
    assert archived.read_bytes() == (relay_dir / "remote" / "INTEST" / fi.name).read_bytes() == b"head\n"
    assert (cfg.paths.failed_dir / fi.name).read_bytes() == b"tail\n"
    why = reason_of(cfg, fi.name)
    assert "earlier version" in why["detail"] and str(archived.parent) in why["detail"], why


@pytest.mark.slow
def test_echo_head_sleep_echo_tail_is_sent_whole_or_its_rest_kept_with_a_reason(
    relay_dir: Path, daemon: Daemon
) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    fi = cfg.paths.outbox_dir / fi_name(1)
    subprocess.run([*AS_NOBODY, "sh", "-c", f"echo head > {fi}; sleep 3; echo tail >> {fi}"], check=True, timeout=30)
    assert wait_until(lambda: state_of(daemon.config, go_of(fi.name)) == State.SENT, 20), daemon.log.read_text()
    remote = (relay_dir / "remote" / "INTEST" / fi.name).read_bytes()
    if remote != b"head\ntail\n":  # sent before the writer came back: the rest is kept, and says why
        assert remote == b"head\n"
        # the reason is written first, then the file moved beside it (spool.quarantine): wait for both
        kept = cfg.paths.failed_dir / fi.name
        assert wait_until(lambda: kept.exists() and kept.with_name(f"{fi.name}.reason.json").exists(), 10)
        assert kept.read_bytes() in (b"head\ntail\n", b"tail\n")
        assert "earlier version" in reason_of(cfg, fi.name)["detail"]


def send_changing_the_original(cfg: Config, when: str, change: bytes) -> Relay:
    """Send one declaration through the real stages over a fake remote that, once the file ``when`` (FS or GO)
    of the set is written, rewrites the outbox original with ``change`` keeping its size and mtime."""
    files: dict[tuple[str, str], bytes] = {}
    relay = Relay(cfg)
    fi = relay.spool.outbox / fi_name(1)

    def rewrite(name: str) -> None:
        if name.startswith(when):
            st = fi.stat()
            fi.write_bytes(change)
            os.utime(fi, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime and the bytes tell

    relay.connect = lambda: FakeTransport(files, [], on_write=rewrite)
    relay.uploader.pool.connect = relay.connect
    fi.write_bytes(b"<DmfA/>")
    relay.send_once(wait_for_settle=False)
    relay.remote_files = files  # type: ignore[attr-defined]
    return relay


def test_an_original_changed_after_its_claim_stops_its_set_before_the_go(cfg: Config) -> None:
    relay = send_changing_the_original(cfg, "FS", b"<DmfB/>")
    try:
        go = go_of(fi_name(1))
        assert ("INTEST", go) not in relay.remote_files, "a GO went out for a declaration changed since its claim"  # type: ignore[attr-defined]
        assert reason_of(cfg, fi_name(1))["reason"] == "declaration changed after it was claimed"
        assert (cfg.paths.failed_dir / fi_name(1)).read_bytes() == b"<DmfB/>"
        assert list(cfg.paths.work_dir.iterdir()) == []  # its signed copy and FS are not left behind
    finally:
        relay.close()


def test_an_original_changed_after_its_go_is_kept_whole_with_a_reason(cfg: Config) -> None:
    relay = send_changing_the_original(cfg, "GO", b"<DmfB/>")
    try:
        row = relay.journal.get_set(go_of(fi_name(1)))
        assert row is not None and row.state == State.SENT
        assert (cfg.paths.failed_dir / fi_name(1)).read_bytes() == b"<DmfB/>"
        why = reason_of(cfg, fi_name(1))
        assert why["reason"] == "changed after it was sent" and "earlier version" in why["detail"]
        [archived] = cfg.paths.sent_dir.rglob(fi_name(1))
        assert archived.read_bytes() == b"<DmfA/>" == relay.remote_files[("INTEST", fi_name(1))]  # type: ignore[attr-defined]
    finally:
        relay.close()


def test_an_original_a_writer_reopened_before_its_release_is_kept_whole_in_failed(cfg: Config) -> None:
    files: dict[tuple[str, str], bytes] = {}
    relay = Relay(cfg)
    fi = relay.spool.outbox / fi_name(1)
    writers: list[subprocess.Popen[str]] = []

    def reopen_at_go(name: str) -> None:  # a writer opens it again to append, and writes only later
        if name.startswith("GO"):
            script = f"exec 3>>{fi}; echo ready; sleep 2; echo '<!-- more -->' >&3"
            writers.append(subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True))
            assert writers[0].stdout is not None and writers[0].stdout.readline() == "ready\n"

    relay.connect = lambda: FakeTransport(files, [], on_write=reopen_at_go)
    relay.uploader.pool.connect = relay.connect
    try:
        fi.write_bytes(b"<DmfA/>\n")
        relay.send_once(wait_for_settle=False)
        assert writers[0].wait(10) == 0
        assert (cfg.paths.failed_dir / fi.name).read_bytes() == b"<DmfA/>\n<!-- more -->\n"  # nothing lost
        why = reason_of(cfg, fi.name)
        assert why["reason"] == "still open when it was sent" and str(cfg.paths.sent_dir) in why["detail"]
    finally:
        relay.close()


# -- item 6: watch.incomplete_after counts from when the relay first saw a file, not from its mtime ------------


@pytest.mark.slow
def test_parts_moved_in_with_old_mtimes_wait_for_the_others(relay_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    d = Daemon(relay_dir / "config.toml", relay_dir / "daemon.log", {"ONSS_RELAY__WATCH__INCOMPLETE_AFTER": "4s"})
    parts = [fi_name(1, total=2, part=i) for i in (1, 2)]
    lone = fi_name(2, total=2, part=1)
    staging = tmp_path / "prepared"
    staging.mkdir()
    for n in [*parts, lone]:
        (staging / n).write_bytes(b"<DmfA/>")
        os.utime(staging / n, (time.time() - 3 * 86400,) * 2)  # prepared days ago; `mv` keeps the mtime
    d.start()
    try:
        cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
        os.rename(staging / parts[0], cfg.paths.outbox_dir / parts[0])
        os.rename(staging / lone, cfg.paths.outbox_dir / lone)
        time.sleep(2)  # the relay saw them, less than watch.incomplete_after ago
        assert not list(cfg.paths.failed_dir.iterdir()), "quarantined at once: its mtime was taken for its age"
        os.rename(staging / parts[1], cfg.paths.outbox_dir / parts[1])
        assert wait_until(lambda: state_of(d.config, go_of(parts[0])) == State.SENT, 20), d.log.read_text()[-2000:]
        # the lone part is still quarantined once it waited watch.incomplete_after since the relay saw it
        assert wait_until(lambda: (cfg.paths.failed_dir / f"{lone}.reason.json").exists(), 20)
        assert reason_of(cfg, lone)["reason"] == "incomplete set"
    finally:
        assert d.stop() == 0


# -- item 7: a declaration dropped as a symbolic link is quarantined with a reason, never silently skipped ----


def test_a_declaration_dropped_as_a_symbolic_link_is_quarantined_with_a_reason(relay_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    outbox = cfg.paths.outbox_dir
    outbox.mkdir(parents=True, exist_ok=True)
    target = tmp_path / "prepared.xml"
    target.write_bytes(b"<DmfA/>")
    (outbox / fi_name(1)).symlink_to(target)
    (outbox / fi_name(2)).symlink_to(tmp_path / "gone.xml")  # dangling
    os.mkfifo(outbox / fi_name(3))
    (outbox / fi_name(4)).write_bytes(b"<DmfA/>")
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"))
    assert r.returncode == 1 and "sent 1 set(s), quarantined 3" in r.stdout, r.stdout + r.stderr
    for n in (fi_name(1), fi_name(2)):
        assert (cfg.paths.failed_dir / n).is_symlink(), n  # the link itself, never a copy of its target
        why = reason_of(cfg, n)
        assert why["reason"] == "a symbolic link, not a file" and "copy or move the file itself" in why["detail"]
    assert str(target) in reason_of(cfg, fi_name(1))["detail"]
    assert target.read_bytes() == b"<DmfA/>"  # the target is left alone
    assert reason_of(cfg, fi_name(3))["reason"] == "not a regular file"
    assert not (relay_dir / "remote" / "INTEST" / fi_name(1)).exists()
    assert list(outbox.iterdir()) == []


# -- item 9: a quarantined set leaves nothing behind in work/ ---------------------------------------------


def test_a_set_refused_while_signing_leaves_nothing_in_work(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    (cfg.paths.outbox_dir / fi_name(1, total=2, part=1)).write_bytes(b"<DmfA/>")
    (cfg.paths.outbox_dir / fi_name(1, total=2, part=2)).write_bytes(b"")  # empty: cannot be signed
    (cfg.paths.outbox_dir / fi_name(2)).write_bytes(b"<DmfA/>")
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"))
    assert r.returncode == 1 and "sent 1 set(s), quarantined 1 set(s) (2 file(s) in failed/)" in r.stdout, r.stdout
    assert reason_of(cfg, fi_name(1, total=2, part=2))["reason"] == "cannot sign"
    assert list(cfg.paths.work_dir.iterdir()) == [], "part 1's signed copy and FS were left in work/"


# -- the /proc look: without filesystem events (send --once), a file a local process holds open is not taken ----


@pytest.mark.slow
def test_send_once_leaves_a_file_its_writer_holds_open(relay_dir: Path) -> None:
    cfg = load_config(relay_dir / "config.toml", environ={})
    cfg.paths.outbox_dir.mkdir(parents=True, exist_ok=True)
    fi = cfg.paths.outbox_dir / fi_name(1)
    # the writer holds the file open until the test tells it to finish (a line on its stdin), however long the
    # send --once takes on a loaded machine; not XML: no well-formedness wait
    script = f"exec 3>{fi}; echo head >&3; echo ready; read go; echo tail >&3"
    writer = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdin is not None and writer.stdout is not None and writer.stdout.readline() == "ready\n"
    settle = {"ONSS_RELAY__WATCH__SETTLE": "1s"}  # longer than the writer's last change: only /proc tells
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"), env=settle)
    assert writer.poll() is None, "the writer finished before the claim looked: the test proves nothing"
    assert r.returncode == 0 and "sent 0 set(s)" in r.stdout, r.stdout + r.stderr
    writer.stdin.write("go\n")
    writer.stdin.close()
    assert writer.wait(10) == 0
    r = run_cli("send", "--once", "--config", str(relay_dir / "config.toml"), env=settle)
    assert r.returncode == 0 and "sent 1 set(s)" in r.stdout, r.stdout + r.stderr
    assert (relay_dir / "remote" / "INTEST" / fi.name).read_bytes() == b"head\ntail\n"
