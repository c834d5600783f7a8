"""Shared benchmark scaffolding: a throw-away sshd, a relay folder, declarations, timing and peak RSS."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import paramiko  # noqa: E402

from onss_relay import identity  # noqa: E402
from tests.conftest import SENDER, SIGNING_PASSWORD, fi_name, sftp_config_text  # noqa: E402
from tests.fixtures.sshd import SshServer, keygen  # noqa: E402

# Where a bench's world lives: not /tmp. On these machines' ext4 (no journal) a file created in a block group
# where many inodes were deleted in the last minute costs its creator ~0.3 ms of kernel CPU (the allocator skips
# each recently deleted inode), against ~0.03 ms elsewhere on the same disk (measured 2026-12-01: 2,000 creates
# of 2 KB in a new folder under /tmp, /var/tmp, /var/lib, /root); /tmp is where every test suite on the shared
# machine creates and deletes, and a bench deletes its own world when it ends. The folder is marked a top of a
# hierarchy (`chattr +T`), so that ext4 puts each bench's world in a block group of its own, away from the
# files the bench before it just deleted. A payroll server's spool is under /var/lib/onss-relay, apart from
# /tmp. ONSS_BENCH_DIR overrides.
BENCH_DIR = os.environ.get("ONSS_BENCH_DIR", "/var/tmp/onss-bench")
# That is not enough (2026-12-02): ext4 places a new top folder where inodes are free and folders few, and the block
# group a bench's world just vacated is such a place: the next bench's world landed there, and for about 30 s each
# file created in it cost 270-610 µs of kernel CPU instead of 15-30 (measured: 500 creates in a new folder, ten
# folders in a row, those in the group emptied seconds before slow). A relay run creates ~6 files per declaration
# (its own and the server's), the shell baseline fewer per second: the same code measured 346 and 646 decl/s in
# two turns a minute apart. So a world is first tried: PROBE files created in it, and a world where creating
# costs more than SLOW_CREATE_US each is left (empty but for the probe) for another, up to WORLD_TRIES.
PROBE, SLOW_CREATE_US, WORLD_TRIES = 300, 100.0, 8


def world(prefix: str) -> Path:
    """Given a prefix, return a new folder for a benchmark's files under BENCH_DIR (made, marked a top of a
    hierarchy, the first time) where creating a file costs what it costs on a quiet disk, deleted when the
    benchmark's process ends (a 500 MB file was left behind)."""
    if not Path(BENCH_DIR).is_dir():
        Path(BENCH_DIR).mkdir(parents=True)
        subprocess.run(["chattr", "+T", BENCH_DIR], stderr=subprocess.DEVNULL, check=False)  # ext4 only
    for _ in range(WORLD_TRIES):
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=BENCH_DIR))
        atexit.register(shutil.rmtree, path, True)
        cost = create_cost(path / ".probe")
        if cost < SLOW_CREATE_US:
            return path
        print(
            f"# {path}: {cost:.0f} µs of CPU per file created (inodes freed there seconds ago): another",
            file=sys.stderr,
        )
    return path


def create_cost(folder: Path) -> float:
    """Given a new folder's path, create PROBE files of 2 KB in it; return the CPU µs each took."""
    folder.mkdir()
    data = b"x" * 2048
    start = time.thread_time()
    for i in range(PROBE):
        fd = os.open(folder / f"p{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    return (time.thread_time() - start) / PROBE * 1e6


class Bench:
    """A temporary world: sshd with the six folders, a client key, a signing identity, a relay config."""

    def __init__(self) -> None:
        self.root = world("onss-bench-")
        self.cleared = 0  # remote folders set aside by clear_remote
        self.sshd = SshServer(self.root / "sshd")
        self.sshd.setup()
        self.key = keygen(self.root / "id_rsa", "rsa", bits=2048)
        self.sshd.authorize(Path(str(self.key) + ".pub"))
        self.sshd.start()
        self.identity = identity.self_signed_identity(
            self.root / "relay" / "keys", "bench", key_type="rsa", password=SIGNING_PASSWORD.encode()
        )
        (self.root / "relay" / "keys" / "signer.pass").write_text(SIGNING_PASSWORD)
        self.known_hosts = self.root / "known_hosts"
        self.known_hosts.write_text(self.sshd.known_hosts_line())

    def relay_config(self, port: int | None = None, extra_remote: str = "", name: str = "relay") -> Path:
        d = self.root / name
        (d / "keys").mkdir(parents=True, exist_ok=True)
        for f in (self.root / "relay" / "keys").iterdir():
            if not (d / "keys" / f.name).exists():
                shutil.copy(f, d / "keys" / f.name)
        text = sftp_config_text(self.sshd, self.key, self.known_hosts, extra_remote)
        if port:
            text = text.replace(f"port = {self.sshd.port}", f"port = {port}")
            self.known_hosts.write_text(
                self.sshd.known_hosts_line() + self.sshd.known_hosts_line().replace(f":{self.sshd.port}", f":{port}")
            )
        (d / "config.toml").write_text(text)
        return d / "config.toml"

    def declarations(self, folder: Path, n: int, size: int = 2048, start: int = 1) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        body = (b"<DmfA>" + b"x" * size)[: size - 9] + b"</DmfA>\r\n"
        out = []
        for i in range(start, start + n):
            p = folder / fi_name(i, "T")
            p.write_bytes(body)
            out.append(p)
        return out

    def sftp_client(self, port: int | None = None) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
        """A plain paramiko connection (the baselines' client), strict about the host key."""
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.connect(
            "127.0.0.1",
            port or self.sshd.port,
            self.sshd.user,
            key_filename=str(self.key),
            look_for_keys=False,
            allow_agent=False,
        )
        return client, client.open_sftp()

    def clear_remote(self) -> None:
        """Empty the server's folders for the next figure: their files are moved aside (deleted with the bench),
        so that the next figure's files are not created among inodes freed seconds before (see BENCH_DIR)."""
        self.cleared += 1
        aside = self.root / "cleared" / str(self.cleared)
        for folder in self.sshd.home.iterdir():
            (aside / folder.name).mkdir(parents=True)
            for f in folder.iterdir():
                f.rename(aside / folder.name / f.name)

    def close(self) -> None:
        self.sshd.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class DelayProxy:
    """The 20 ms each-way path, in a process of its own: tests/fixtures/tcpproxy.py's TcpProxy in the bench's
    process would share its interpreter lock with a relay run in-process (bench_upload), each forwarded packet
    waiting up to sys.getswitchinterval() (5 ms) for the uploading thread to let go of it: a delay on top of the
    20 ms, and CPU in the relay's process, that no real network path adds."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        code = (
            "import sys; from tests.fixtures.tcpproxy import TcpProxy; "
            f"p = TcpProxy({upstream_port}, delay={delay!r}); print(p.port, flush=True); sys.stdin.read()"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            text=True,
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def bench_args(doc: str | None) -> argparse.Namespace:
    """The options every benchmark takes: --quick (small sizes) and --json FILE; logging quiet."""
    from onss_relay.log import setup_logging

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    setup_logging("error")
    return ap.parse_args()


def lower_is_better(name: str, unit: str, relay: float, baseline: float, baseline_name: str) -> dict[str, object]:
    """A figure where smaller is better (latency, memory): the ratio is baseline / relay."""
    return {
        "name": name,
        "unit": unit,
        "relay": relay,
        "baseline": baseline,
        "ratio": baseline / max(relay, 0.001),
        "baseline_name": f"{baseline_name} (ratio: baseline/relay)",
    }


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_rss_mb_children() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def emit(figures: list[dict[str, object]], path: Path | None = None) -> None:
    """Print one line per figure (relay, baseline, ratio) and optionally write them as JSON."""
    for f in figures:
        print(
            f"{f['name']:<48} relay {f['relay']:>10.1f} {f['unit']:<12} baseline {f['baseline']:>10.1f}"
            f"   ratio {f['ratio']:>6.2f}x  ({f['baseline_name']})",
            flush=True,
        )
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))


__all__ = ["Bench", "DelayProxy", "world", "SENDER", "emit", "timed", "peak_rss_mb_children"]
