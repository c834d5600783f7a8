"""The README as written on Debian 12 with its own Python (PEP 668: no system-wide pip): the "Try it" demo
command, then the pip block and the systemd block in order, twice, under a temporary root; then `check` as the
service user, and `check` as root naming a file the service user cannot read (issue 24 item 1)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_first_week import host_key_line

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
DEBIAN_PYTHON = Path("/usr/bin/python3")
SERVICE = "nobody"  # an account every Debian has; the README's onss-relay account is made under the temporary root
SERVICE_GROUP = "nogroup"


def block_after(heading: str) -> str:
    """Given a README heading, return the first sh block after it."""
    return README.split(heading, 1)[1].split("```sh", 1)[1].split("```", 1)[0]


def commands(block: str) -> list[str]:
    """Given an sh block, return its commands: comments dropped, continuation lines joined."""
    return [re.sub(r"\s+#.*$", "", c).strip() for c in block.replace("\\\n", " ").strip().splitlines()]


def externally_managed() -> bool:
    """Whether Debian's own python3 is there, refuses a system-wide pip (PEP 668) and has venv."""
    if not DEBIAN_PYTHON.exists():
        return False
    r = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", "import ensurepip, venv, sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
    )
    return r.returncode == 0 and (Path(r.stdout.strip()) / "EXTERNALLY-MANAGED").exists()


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not externally_managed(), reason="needs Debian's python3 and python3-venv"),
]


@pytest.fixture
def root() -> Iterator[Path]:
    """A temporary root the service account can walk into (pytest's own temporary folders are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="onss-readme-"))
    path.chmod(0o755)
    for d in ("opt", "etc/systemd/system", "usr/local/bin", "usr/lib/sysusers.d", "var/lib"):
        (path / d).mkdir(parents=True)
    yield path
    shutil.rmtree(path)


def run(command: str, root: Path, cwd: Path, service: str = SERVICE) -> subprocess.CompletedProcess[str]:
    """Given one README command, run it with Debian's python3 first on PATH and its system paths under root (the
    service account: ``service``)."""
    for path in ("/opt/", "/etc/", "/usr/local/bin/", "/usr/lib/"):
        command = re.sub(rf"(?<![\w.-]){re.escape(path)}", f"{root}{path}", command)
    command = command.replace("systemd-sysusers", f"systemd-sysusers --root={root}")
    command = command.replace("root:onss-relay", f"root:{SERVICE_GROUP}")  # the account made under root is not ours
    return subprocess.run(
        command, shell=True, cwd=cwd, env=run_env(root, service), capture_output=True, text=True, timeout=300
    )


def run_env(root: Path, service: str) -> dict[str, str]:
    """Given the temporary root, return the environment the README's commands run in."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        "PATH": f"{root}/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "ONSS_RELAY__PATHS__ROOT": f"{root}/var/lib/onss-relay",
        "ONSS_RELAY__PATHS__OUTBOX": f"{root}/var/lib/onss-relay/outbox",
        "ONSS_RELAY__PATHS__INBOX": f"{root}/var/lib/onss-relay/inbox",
        "ONSS_RELAY_SERVICE_USER": service,
    }


def test_the_try_it_demo_command_works_with_debians_python(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__"))
    demo = commands(block_after("## Try it, test it"))[0]
    assert "python3 -m venv" in demo and "pip install" in demo
    for _ in range(2):  # run twice, same result
        r = run(demo, tmp_path, source)
        assert r.returncode == 0 and "ACRF" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_the_pip_and_systemd_blocks_work_as_written_twice_then_as_the_service_user(
    root: Path, identity_dir: Path
) -> None:
    etc = root / "etc" / "onss-relay"
    pip_block = [
        c for c in commands(block_after("### With pip, in a virtual environment")) if not c.startswith("onss-relay run")
    ]
    systemd_block = [c for c in commands(block_after("### As a systemd service")) if not c.startswith("systemctl")]
    known_hosts = host_key_line()
    for attempt in (1, 2):  # every block run twice: the same result
        for command in pip_block + systemd_block:
            if command.startswith("onss-relay check"):
                for name in ("signer.p12", "signer.pass"):  # step 1 of init's next steps
                    shutil.copy(identity_dir / name, etc / name)
                    (etc / name).chmod(0o640)
                (etc / "known_hosts").write_text(known_hosts)  # step 3
                command = command.replace("check", "check --local", 1)  # no transfer point here
            # the pip block runs before the systemd block makes the service account (the first time)
            r = run(command, root, REPO, SERVICE if attempt == 2 else "no-such-account")
            assert r.returncode == 0, f"run {attempt}: {command}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        if attempt == 1:
            first = {p.name: p.read_bytes() for p in etc.iterdir()}
    assert {p.name: p.read_bytes() for p in etc.iterdir()} == first  # init kept the key pair and config
    assert (root / "usr/local/bin/onss-relay").resolve() == (root / "opt/onss-relay/bin/onss-relay").resolve()
    assert (root / "etc/systemd/system/onss-relay.service").exists()
    assert "onss-relay:" in (root / "etc/passwd").read_text()  # systemd-sysusers made the account
    config = etc / "config.toml"
    as_service = subprocess.run(
        [str(root / "usr/local/bin/onss-relay"), "check", "--local", "--config", str(config)],
        user=SERVICE,
        group=SERVICE_GROUP,
        extra_groups=[],
        env={
            "PATH": "/usr/bin:/bin",
            **{k: v for k, v in run_env(root, SERVICE).items() if k.startswith("ONSS_RELAY__")},
        },
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert "✓ signing certificate" in as_service.stdout and "✓ SSH key readable" in as_service.stdout, (
        as_service.stdout + as_service.stderr
    )
    as_root = run(f"onss-relay check --local --config {config}", root, REPO)
    assert f"files readable by the service user {SERVICE}" in as_root.stdout, as_root.stdout
    owners = {n: (etc / n).stat() for n in ("id_rsa", "signer.p12", "signer.pass", "config.toml")}
    service = pwd.getpwnam(SERVICE)
    for name in ("id_rsa", "signer.p12", "signer.pass"):  # init as root: the secrets the service user's alone
        assert (owners[name].st_uid, owners[name].st_mode & 0o777) == (service.pw_uid, 0o600), name
    assert (owners["config.toml"].st_gid, owners["config.toml"].st_mode & 0o777) == (service.pw_gid, 0o640)
    os.chown(etc / "signer.pass", 0, 0)  # a password file copied in again by root, mode 600
    as_root = run(f"onss-relay check --local --config {config}", root, REPO)
    assert as_root.returncode == 2, as_root.stdout + as_root.stderr
    assert (
        f"signing.password_file = '{etc / 'signer.pass'}': the service user {SERVICE} cannot read it" in as_root.stdout
    )
