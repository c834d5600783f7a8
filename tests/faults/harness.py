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
from tests.conftest import fi_name, sftp_config_text
from tests.fixtures.sshd import SshServer
from tests.fixtures.tcpproxy import TcpProxy
from tests.helpers import Daemon, wait_until

FULL = os.environ.get("ONSS_RELAY_FAULTS") == "full"


class FaultWorld:
    """Given a relay folder (keys made), an sshd and a client key, set up a relay that talks through a proxy."""

    def __init__(self, relay_dir: Path, sshd: SshServer, key: Path, seed: int | None = None) -> None:
        self.dir = relay_dir
        self.sshd = sshd
        self.proxy = TcpProxy(sshd.port)
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
            text.replace(f"port = {sshd.port}", f"port = {self.proxy.port}").replace('timeout = "10s"\n', "")
        )
        self.log = relay_dir / "daemon.log"
        self.daemon: Daemon | None = None
        self.originals: dict[str, bytes] = {}
        self.responses: dict[str, bytes] = {}
        self.gos: list[str] = []

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

    def start(self, env: dict[str, str] | None = None, wrapper: list[str] | None = None) -> None:
        self.daemon = Daemon(self.config, self.log, env=env, wrapper=wrapper)
        self.daemon.start()

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.daemon.proc if self.daemon else None

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.kill()

    def stop(self) -> None:
        if self.daemon is not None:
            assert self.daemon.stop(20) == 0

    def done(self) -> bool:
        cfg = self.cfg
        if not cfg.paths.journal_path.exists():
            return False
        j = open_journal_at(cfg.paths.journal_path)
        try:
            sent = sum(1 for r in j.sets_in(State.SENT) if r.archived)
            responses = [n for n in self.responses if j.get_response("OUTTEST", n) is not None]
            return (
                sent == len(self.gos)
                and len(responses) == len(self.responses)
                and not any((self.sshd.home / "OUTTEST").iterdir())
            )
        finally:
            j.close()

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

    def check_invariants(self) -> None:
        cfg = self.cfg
        j = open_journal_at(cfg.paths.journal_path)
        events = self.sshd.events()
        try:
            for go in self.gos:
                row = j.get_set(go)
                assert row is not None and row.state == State.SENT, (go, row and row.state)
                go_opens = [i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.endswith("/" + go)]
                assert len(go_opens) == 1, f"{go} written {len(go_opens)} times"
                for fi in row.parts:
                    assert (self.sshd.home / "INTEST" / fi).read_bytes() == self.originals[fi], fi
                    fs = self.sshd.home / "INTEST" / ("FS" + fi[2:])
                    signature.verify(self.sshd.home / "INTEST" / fi, fs.read_bytes())
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
        missing = set(self.originals) - kept
        assert not missing, f"lost: {sorted(missing)[:5]}"
        assert not list(cfg.paths.inbox_dir.rglob(".*.part")), "half-downloaded files left in the inbox"


def sleep_random(world: FaultWorld, low: float, high: float) -> None:
    time.sleep(world.rng.uniform(low, high))
