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

# one xdist worker runs them all, one after the other: they share one image, a base made once per machine, and
# fixed podman names (volumes, containers, the compose project)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("containers")]

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


COMPOSE_OVERRIDE = """
services:
  onss-relay:
    image: {image}
    environment:
      ONSS_RELAY__REMOTE__HOST: 127.0.0.1
      ONSS_RELAY__REMOTE__PORT: "{port}"
      ONSS_RELAY__REMOTE__USERNAME: {user}
      ONSS_RELAY__WATCH__SETTLE: 0s
      ONSS_RELAY__WATCH__RESCAN: 1s
      ONSS_RELAY__POLL__INTERVAL: 1s
  hr-system:
    image: {image}
    entrypoint: ["/bin/sh", "-c"]
    command: ["{script}"]
"""

# podman-compose always puts containers on a project network; these machines have no bridge networking, so
# the podman it runs is this wrapper: the host's network instead (what `--network=host` does above)
PODMAN_HOST_NET = """#!/usr/bin/env python3
import os, sys
args, out, drop = sys.argv[1:], [], 0
for a in args:
    if drop:
        drop -= 1
    elif a in ("--net", "--network", "--network-alias"):
        drop = 1
    elif a.startswith(("--net=", "--network=", "--network-alias=")):
        pass
    else:
        out.append(a)
if out and out[0] in ("run", "create"):
    out[1:1] = ["--network=host"]
os.execvp("podman", ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *out])
"""

# the HR side: writes two declarations under temporary names and renames them, then waits for both results
HR_SCRIPT = (
    "set -e; mkdir -p /exchange/outbox; for f in {names}; do printf '<Dimona>%s</Dimona>' $f > /exchange/outbox/.$f.tmp;"
    " mv /exchange/outbox/.$f.tmp /exchange/outbox/$f; done;"
    " until [ $(grep -l notified /exchange/results/GO.* 2>/dev/null | wc -l) -ge 2 ]; do sleep 1; done;"
    " touch /exchange/hr-read-the-results; sleep 600"
)


def test_the_compose_example_runs_with_an_hr_side_sharing_the_exchange_volume(
    image: str, tmp_path: Path, sshd: SshServer, identity_dir: Path
) -> None:
    from onss_relay.simulator import Simulator
    from tests.conftest import SIGNING_PASSWORD

    if shutil.which("podman-compose") is None:
        if REQUIRED:
            pytest.fail("podman-compose not installed: .ci/run installs it")
        pytest.skip("podman-compose not installed")
    project = tmp_path / "compose"
    project.mkdir()
    shutil.copy(REPO / "docker-compose.example.yml", project / "docker-compose.yml")
    config = project / "onss-relay"
    assert run_cli("init", str(config)).returncode == 0
    shutil.copy(identity_dir / "signer.p12", config / "signer.p12")
    (config / "known_hosts").write_text(sshd.known_hosts_line())
    sshd.authorize(config / "id_rsa.pub")
    for p in [config, *config.iterdir()]:
        os.chown(p, UID, UID)
    (project / "secrets").mkdir()
    (project / "secrets" / "signer_password.txt").write_text(SIGNING_PASSWORD + "\n")
    (project / "secrets" / "ssh_passphrase.txt").write_text("")  # init's key has none
    names = [fi_name(seq) for seq in (1, 2)]
    script = HR_SCRIPT.format(names=" ".join(names)).replace("$", "$$")  # compose interpolates $
    (project / "docker-compose.override.yml").write_text(
        COMPOSE_OVERRIDE.format(image=image, port=sshd.port, user=sshd.user, script=script)
    )
    conf = tmp_path / "containers.conf"  # the ulimits these machines allow
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n')
    wrapper = tmp_path / "podman-host-net"
    wrapper.write_text(PODMAN_HOST_NET)
    wrapper.chmod(0o755)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman-compose", "--podman-path", str(wrapper), *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def relay_logs() -> str:
        return podman("logs", "compose_onss-relay_1", check=False).stderr[-3000:]

    up = compose("up", "-d")
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    try:
        gos = ["GO" + n[2:-2] for n in names]
        assert wait_until(lambda: all((sshd.home / "INTEST" / go).exists() for go in gos), 90), relay_logs()
        Simulator(sshd.home, SENDER).process()
        volume = next(
            v
            for v in json.loads(podman("volume", "ls", "--format", "json").stdout)
            if v["Name"].endswith("hr-exchange") and v["Name"].startswith("compose")
        )
        mount = Path(json.loads(podman("volume", "inspect", volume["Name"]).stdout)[0]["Mountpoint"])
        assert wait_until(lambda: (mount / "hr-read-the-results").exists(), 90), relay_logs()
        assert len(list((mount / "inbox" / "OUTTEST").glob("FO.NOTI.*"))) == 2
        assert mount.stat().st_uid == UID and all(p.stat().st_uid == UID for p in mount.rglob("*"))
    finally:
        down = compose("down", "-v")
        assert down.returncode == 0, down.stderr[-2000:]
