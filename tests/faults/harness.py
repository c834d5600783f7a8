"""The fault world: the real daemon, a real sshd behind a TCP proxy, declarations and responses, invariants.

A scenario drops declarations in the outbox and responses in the OUT folders, runs `onss-relay run` while a
fault is injected, lets it finish, and then checks what must hold whatever happened:

- every valid declaration is on the server once, byte-identical, its FS verifying, its GO written once
  and only after every FI and FS of its set was complete;
- no remote response was deleted without a byte-identical local copy;
- nothing is missing from outbox ∪ sent ∪ failed.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

from onss_relay import signature
from onss_relay.config import Config, load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.simulator import Simulator
from tests.conftest import SENDER, fi_name, sftp_config_text
from tests.fixtures.sshd import SshServer
from tests.fixtures.tcpproxy import TcpProxy
from tests.helpers import Daemon, run_cli, wait_until

FULL = os.environ.get("ONSS_RELAY_FAULTS") == "full"


class FaultWorld:
    """Given a relay folder (keys made), an sshd and a client key, set up a relay that talks through a proxy."""

    def __init__(
        self,
        relay_dir: Path,
        sshd: SshServer,
        key: Path,
        seed: int | None = None,
        proxy: type[TcpProxy] = TcpProxy,
        quiet_period: str = "6s",  # longer than the 5 s stalls of test_connections_stalled
    ) -> None:
        self.dir = relay_dir
        self.sshd = sshd
        self.proxy = proxy(sshd.port)
        self.seed = (
            seed if seed is not None else int(os.environ.get("ONSS_RELAY_FAULT_SEED", random.randrange(1 << 30)))
        )
        print(f"fault seed {self.seed} (rerun with ONSS_RELAY_FAULT_SEED={self.seed})")
        self.rng = random.Random(self.seed)
        known = relay_dir / "known_hosts"
        known.write_text(sshd.known_hosts_line().replace(f":{sshd.port}", f":{self.proxy.port}"))
        text = sftp_config_text(sshd, key, known, 'timeout = "3s"\npermanent_retry = "1s"\n')
        self.config = relay_dir / "config.toml"
        self.config.write_text(
            text.replace(f"port = {sshd.port}", f"port = {self.proxy.port}")
            .replace('timeout = "10s"\n', "")
            .replace('quiet_period = "1s"', f'quiet_period = "{quiet_period}"')
        )
        self.log = relay_dir / "daemon.log"
        self.daemon: Daemon | None = None
        self.originals: dict[str, bytes] = {}
        self.responses: dict[str, bytes] = {}
        self.gos: list[str] = []
        self.removed: dict[str, str] = {}  # FI deleted from the outbox by the scenario → its set's GO
        self.consumed: dict[str, bytes] = {}  # what the simulated transfer point took from INTEST, by name
        self.answering = False  # the simulated transfer point consumes and answers every complete set

    def set_quiet_period(self, period: str) -> None:
        """Given a remote.quiet_period, write it in the config: scenarios whose path holds nothing (SIGKILLs through
        a forwarding proxy) need not wait the 6 s that outlasts the 5 s stalls; each restart after a kill
        mid-upload waits it (stages/unclean_stop.py)."""
        text = self.config.read_text()
        start = text.index("quiet_period = ")
        end = text.index("\n", start)
        self.config.write_text(text[:start] + f'quiet_period = "{period}"' + text[end:])

    @property
    def cfg(self) -> Config:
        return load_config(self.config, environ={})

    # -- input ------------------------------------------------------------------------------------

    def declarations(self, n: int, start: int = 1) -> None:
        outbox = self.cfg.paths.outbox_dir
        outbox.mkdir(parents=True, exist_ok=True)
        for seq in range(start, start + n):
            total = 1 + self.rng.randrange(3)
            for part in range(1, total + 1):
                name = fi_name(seq, "T", total, part)
                content = os.urandom(self.rng.randrange(200, 20000)).hex().encode()
                (outbox / name).write_bytes(content)
                self.originals[name] = content
            self.gos.append("GO" + fi_name(seq, "T", total, 1)[2:-2])

    def server_responses(self, n: int) -> None:
        out = self.sshd.home / "OUTTEST"
        for i in range(1, n + 1):
            name = f"FO.NOTI.999999.20261124.{i:05d}.T"
            content = (
                b"<NOTIFICATION><Form><Reference><ReferenceNbr>X%d</ReferenceNbr></Reference></Form></NOTIFICATION>" % i
            )
            (out / name).write_bytes(content * self.rng.randrange(1, 200))
            self.responses[name] = (out / name).read_bytes()
            (out / ("GO" + name[2:])).write_bytes(b"")
            self.responses["GO" + name[2:]] = b""

    # -- the daemon -------------------------------------------------------------------------------

    def start(
        self, env: dict[str, str] | None = None, wrapper: list[str] | None = None, until: str = "relay_started"
    ) -> None:
        self.daemon = Daemon(self.config, self.log, env=env, wrapper=wrapper)
        self.daemon.start(until=until)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.daemon.proc if self.daemon else None

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.kill()

    def stop(self) -> None:
        if self.daemon is not None:
            assert self.daemon.stop(20) == 0

    def answer(self) -> None:
        """Play the transfer point once: consume and answer every complete set, keeping a copy of each file it
        takes from INTEST (to check later what the server received) and of each answer it writes."""
        sim = Simulator(self.sshd.home, SENDER)
        put_bytes, delete = sim.remote.put_bytes, sim.remote.delete

        def recorded(data: bytes, folder: str, name: str) -> None:
            if folder == "OUTTEST":
                self.responses[name] = data  # an answer: it must reach the inbox byte for byte
            put_bytes(data, folder, name)

        def taken(folder: str, name: str) -> None:
            if folder == "INTEST":
                self.consumed.setdefault(name, (self.sshd.home / folder / name).read_bytes())
            delete(folder, name)

        sim.remote.put_bytes = recorded  # type: ignore[method-assign]
        sim.remote.delete = taken  # type: ignore[method-assign]
        sim.process()

    def poll_once(self) -> subprocess.CompletedProcess[str]:
        """A cron'd `poll --once`, as run while the daemon is down."""
        return run_cli("poll", "--once", "--config", str(self.config))

    def finished_sets(self) -> bool:
        """Whether every set has its final state: sent and archived (answered: its answer linked), or failed
        for a declaration the scenario removed."""
        j = open_journal_at(self.cfg.paths.journal_path)
        try:
            for go in self.gos:
                row = j.get_set(go)
                if row is None:
                    return False
                if row.state == State.FAILED and go in self.removed.values():
                    continue
                final = (State.NOTIFIED, State.REFUSED) if self.answering else (State.SENT,)
                if row.state not in final or not row.archived:
                    return False
            return True
        finally:
            j.close()

    def done(self) -> bool:
        cfg = self.cfg
        if not cfg.paths.journal_path.exists():
            return False
        if self.answering:
            self.answer()
        j = open_journal_at(cfg.paths.journal_path)
        try:
            responses = [n for n in self.responses if j.get_response("OUTTEST", n) is not None]
            mirrored = len(responses) == len(self.responses) and not any((self.sshd.home / "OUTTEST").iterdir())
        finally:
            j.close()
        return mirrored and self.finished_sets()

    def finish(self, timeout: float = 120) -> None:
        """Run the daemon (fault removed) until everything is sent and mirrored, then stop it and check."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            assert wait_until(self.done, timeout, 0.3), self.log.read_text()[-3000:]
        finally:
            self.stop()
            self.proxy.close()
        self.check_invariants()

    # -- what must hold -----------------------------------------------------------------------------

    def on_server(self, name: str) -> bytes:
        """What the server received for an INTEST file: still there, or taken by the simulated transfer point."""
        path = self.sshd.home / "INTEST" / name
        return path.read_bytes() if path.exists() else self.consumed[name]

    def check_invariants(self) -> None:
        cfg = self.cfg
        j = open_journal_at(cfg.paths.journal_path)
        events = self.sshd.events()
        try:
            for go in self.gos:
                row = j.get_set(go)
                assert row is not None, go
                go_opens = [i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.endswith("/" + go)]
                if row.state == State.FAILED:  # only a set whose declaration the scenario removed, saying so
                    assert go in self.removed.values() and "vanished" in (row.reason or ""), (go, row.reason)
                    assert go_opens == [], f"{go} failed but its GO was written"
                    continue
                assert len(go_opens) == 1, f"{go} ({row.state}) written {len(go_opens)} times"
                for fi in row.parts:
                    sent = self.on_server(fi)
                    assert sent == self.originals[fi], fi
                    copy = self.dir / "verify.tmp"
                    copy.write_bytes(sent)
                    signature.verify(copy, self.on_server("FS" + fi[2:]))
                for name in row.parts + list(row.data.fs):
                    closes = [i for i, (ev, p) in enumerate(events) if ev == "close" and p.endswith("/" + name)]
                    assert closes and max(closes) < go_opens[0], f"{name} changed after the GO of {go}"
        finally:
            j.close()
        removed = [p.rsplit("/", 1)[1] for ev, p in events if ev == "remove" and "/OUTTEST/" in p]
        for name in removed:
            local = cfg.paths.inbox_dir / "OUTTEST" / name
            assert local.read_bytes() == self.responses[name], f"{name} deleted remotely without a good local copy"
        assert sorted(removed) == sorted(self.responses)
        kept = {
            p.name
            for d in (cfg.paths.outbox_dir, cfg.paths.sent_dir, cfg.paths.failed_dir)
            for p in d.rglob("*")
            if p.is_file()
        }
        missing = set(self.originals) - kept - set(self.removed)
        assert not missing, f"lost: {sorted(missing)[:5]}"
        downloading = cfg.paths.inbox_dir / ".downloading"
        assert not [p for p in downloading.rglob("*") if p.is_file()], "half-downloaded files left in the inbox"


def sleep_random(world: FaultWorld, low: float, high: float) -> None:
    time.sleep(world.rng.uniform(low, high))
