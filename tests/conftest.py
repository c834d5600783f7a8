"""Shared fixtures: a local-transport relay configuration with a throw-away signing identity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from onss_relay import signing
from onss_relay.config import Config, load_config
from onss_relay.names import Env, Name, Prefix, format_name
from onss_relay.transport.local import make_remote_home

SENDER = "123456"
TODAY = dt.date.today().strftime("%Y%m%d")


def fi_name(seq: int, env: str = "T", total: int = 1, part: int = 1, app: str = "DMFA",
            sender: str = SENDER, date: str = TODAY) -> str:
    return format_name(Name(Prefix.FI, app, sender, date, f"{seq:05d}", Env(env), total, part))


def write_config(directory: Path, extra: str = "", transport: str = "local") -> Path:
    """Given a folder, write a config with a local transport there (keys made beforehand); return its path."""
    text = f"""
[sender]
number = "{SENDER}"
[paths]
root = "spool"
[signing]
key = "keys/signer.p12"
[remote]
transport = "{transport}"
base_dir = "remote"
connections = 2
[watch]
settle = "0s"
[poll]
interval = "1s"
{extra}
"""
    path = directory / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def identity_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("identity")
    signing.self_signed_identity(d, "Test Payroll")
    return d


@pytest.fixture
def relay_dir(tmp_path: Path, identity_dir: Path) -> Path:
    (tmp_path / "keys").mkdir()
    for f in identity_dir.iterdir():
        (tmp_path / "keys" / f.name).write_bytes(f.read_bytes())
    make_remote_home(tmp_path / "remote")
    write_config(tmp_path)
    return tmp_path


@pytest.fixture
def cfg(relay_dir: Path) -> Config:
    return load_config(relay_dir / "config.toml", environ={})
