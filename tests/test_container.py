"""The container image, built and run: Podman with runc (no Docker engine here, no image registry), on a
Debian bookworm base made with debootstrap, the relay installed from wheels built on the host.

Outside CI these tests are skipped where podman is absent; in CI (.ci/run sets ONSS_RELAY_REQUIRE_CONTAINERS,
and installs podman, runc and debootstrap) they must run. The base image is made once per machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SENDER, fi_name
from tests.fixtures.sshd import SshServer
from tests.helpers import run_cli, wait_until
from tests.test_uploader_sftp import assert_order_and_once

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
RUN = ["--network=host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
BASE = "localhost/onss-relay-base:bookworm"
IMAGE = "localhost/onss-relay:test"
REQUIRED = bool(os.environ.get("ONSS_RELAY_REQUIRE_CONTAINERS") or os.environ.get("CI"))
UID = 10001


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    return r


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (debootstrap fetches the base system from it)."""
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*.sources")]:
        lines = source.read_text().splitlines() if source.exists() else []
        for line in lines:
            words = line.split()
            urls = words[1:] if words[:1] == ["URIs:"] else words[1:2] if words[:1] == ["deb"] else []
            for url in urls:
                if url.startswith("http") and "security" not in url:
                    return url
    return "http://deb.debian.org/debian"


def ensure_base(work: Path) -> None:
    """A Debian bookworm base with python3 and venv, made with debootstrap and imported (once per machine)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return
    rootfs = work / "rootfs"
    subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,ca-certificates",
            "bookworm",
            str(rootfs),
            debian_mirror(),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run([*PODMAN, "import", "-", BASE], stdin=tar.stdout, capture_output=True, text=True)
    assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    shutil.rmtree(rootfs, ignore_errors=True)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        if REQUIRED:
            pytest.fail(
                f"{', '.join(missing)} not installed: the container tests must run in CI (.ci/run installs them)"
            )
        pytest.skip(f"{', '.join(missing)} not installed (outside CI the container tests are optional)")
    work = tmp_path_factory.mktemp("image")
    ensure_base(work)
    context = work / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md", "Dockerfile", ".dockerignore"):
        shutil.copy(REPO / name, context / name)
    shutil.copytree(REPO / "onss_relay", context / "onss_relay", ignore=shutil.ignore_patterns("__pycache__"))
    # the relay and its libraries as wheels made here: the build then needs no network
    for what in ([str(context)], ["setuptools>=68", "wheel"]):  # the relay's wheels, and its build backend's
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(context / "wheels"), *what],
            check=True,
            capture_output=True,
            timeout=600,
        )
    podman(
        "build",
        "--network=host",
        "--format",
        "docker",
        "--build-arg",
        f"BASE={BASE}",
        "--build-arg",
        "PIP_OPTIONS=--no-index --find-links /src/wheels",
        "-t",
        IMAGE,
        str(context),
        timeout=900,
    )
    yield IMAGE


def test_the_image_keeps_its_healthcheck_and_runs_as_an_unprivileged_user(image: str) -> None:
    [info] = json.loads(podman("image", "inspect", image).stdout)
    config = info["Config"]
    assert config["User"] == "onss-relay:onss-relay"
    assert info["Healthcheck"]["Test"] == ["CMD", "onss-relay", "status", "--health"]  # kept: --format docker
    assert "/opt/onss-relay/bin" in next(e for e in config["Env"] if e.startswith("PATH="))
    r = podman("run", "--rm", *RUN, image, "--version")
    assert r.stdout.startswith("onss-relay ")
    r = podman("run", "--rm", *RUN, "--entrypoint", "id", image)
    assert r.stdout.startswith(f"uid={UID}(onss-relay) gid={UID}(onss-relay)")


def test_demo_runs_in_the_image_and_never_touches_the_spool(image: str) -> None:
    volume = "onss-relay-test-demo"
    podman("volume", "rm", "-f", volume, check=False)
    try:
        r = podman("run", "--rm", *RUN, "-v", f"{volume}:/var/lib/onss-relay", image, "demo", timeout=300)
        assert "accepted" in r.stdout and "refused" in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
        listing = podman(
            "run",
            "--rm",
            *RUN,
            "-v",
            f"{volume}:/var/lib/onss-relay",
            "--entrypoint",
            "ls",
            image,
            "-A",
            "/var/lib/onss-relay",
        )
        assert listing.stdout.split() == [], listing.stdout  # the configured spool stays untouched
    finally:
        podman("volume", "rm", "-f", volume, check=False)


def test_the_daemon_in_the_image_relays_from_an_exchange_folder_and_back(
    image: str, tmp_path: Path, sshd: SshServer, identity_dir: Path
) -> None:
    from onss_relay.simulator import Simulator

    config = tmp_path / "config"
    r = run_cli("init", str(config))
    assert r.returncode == 0, r.stderr
    for name in ("signer.p12", "signer.pass"):
        shutil.copy(identity_dir / name, config / name)
    (config / "known_hosts").write_text(sshd.known_hosts_line())
    sshd.authorize(config / "id_rsa.pub")
    exchange = tmp_path / "exchange"
    (exchange / "outbox").mkdir(parents=True)
    (exchange / "inbox").mkdir()
    for p in [config, *config.iterdir(), exchange, *exchange.iterdir()]:
        os.chown(p, UID, UID)  # what the README tells: the config readable, the exchange writable, by uid 10001
    volume, name = "onss-relay-test-spool", "onss-relay-test-daemon"
    podman("rm", "-f", name, check=False)
    podman("volume", "rm", "-f", volume, check=False)
    env = {
        "SENDER__NUMBER": SENDER,
        "REMOTE__HOST": "127.0.0.1",
        "REMOTE__PORT": str(sshd.port),
        "REMOTE__USERNAME": sshd.user,
        "PATHS__OUTBOX": "/exchange/outbox",
        "PATHS__INBOX": "/exchange/inbox",
        "WATCH__SETTLE": "0s",
        "WATCH__RESCAN": "1s",
        "POLL__INTERVAL": "1s",
    }
    podman(
        "run",
        "-d",
        "--name",
        name,
        *RUN,
        "-v",
        f"{config}:/etc/onss-relay:ro",
        "-v",
        f"{volume}:/var/lib/onss-relay",
        "-v",
        f"{exchange}:/exchange",
        *[a for k, v in env.items() for a in ("-e", f"ONSS_RELAY__{k}={v}")],
        image,
    )
    try:
        names = []
        for seq in (1, 2, 3):
            body = b"<DmfA>" + b"<Worker/>" * (seq * 500) + b"</DmfA>"
            temp = exchange / "outbox" / f".{fi_name(seq)}.tmp"
            temp.write_bytes(body)
            temp.rename(exchange / "outbox" / fi_name(seq))  # as the README tells writers: temp name, then rename
            names.append(fi_name(seq))
        gos = ["GO" + n[2:-2] for n in names]
        assert wait_until(lambda: all((sshd.home / "INTEST" / go).exists() for go in gos), 90), podman(
            "logs", name
        ).stderr[-3000:]
        for fi, go in zip(names, gos, strict=True):
            assert_order_and_once(sshd, go, [fi], ["FS" + fi[2:]])
        Simulator(sshd.home, SENDER).process()  # the transfer point answers
        inbox = exchange / "inbox" / "OUTTEST"
        assert wait_until(
            lambda: len(list(inbox.glob("FO.NOTI.*"))) == 3 and len(list(inbox.glob("FO.ACRF.*"))) == 3, 60
        ), podman("logs", name).stderr[-3000:]
        assert wait_until(lambda: podman("healthcheck", "run", name, check=False).returncode == 0, 30)
        t0 = time.monotonic()
        podman("stop", "-t", "20", name, timeout=60)
        assert time.monotonic() - t0 < 20
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name).stderr[-3000:]
        mount = json.loads(podman("volume", "inspect", volume).stdout)[0]["Mountpoint"]
        written = [*Path(mount).rglob("*"), *(exchange / "inbox").rglob("*")]
        as_root = [str(p) for p in written if p.stat().st_uid == 0]
        assert written and as_root == [], f"written as root: {as_root[:5]}"
        assert len(list(Path(mount).rglob("sent/*/GO.*"))) == 3
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)
