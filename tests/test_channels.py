"""The same end-to-end guarantees over every channel: SFTP, FTP, FTPS (and a local folder where it applies).

Upload order and exactly-once GO, mirroring and remote delete, hostile names, and SIGKILL of the daemon.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.journal import State, open_journal_at
from onss_relay.pipeline import Relay
from tests.conftest import fi_name
from tests.helpers import Daemon, seeded_rng, wait_until


@dataclasses.dataclass
class Channel:
    name: str
    config: Path
    home: Path
    events: Callable[[], list[tuple[str, str]]] | None
    server: object = None

    def cfg(self, **env: str) -> Config:
        return load_config(self.config, environ={f"ONSS_RELAY__{k.upper()}": v for k, v in env.items()})

    def writes_of(self, name: str) -> int:
        assert self.events is not None
        return sum(1 for ev, p in self.events() if ev == "open-write" and p.endswith("/" + name))


@pytest.fixture(params=["sftp", "ftp", "ftps", "local"])
def channel(request: pytest.FixtureRequest, relay_dir: Path) -> Channel:
    if request.param == "local":
        return Channel("local", relay_dir / "config.toml", relay_dir / "remote", None)
    if request.param == "sftp":
        request.getfixturevalue("sftp_dir")
        server = request.getfixturevalue("sshd")
    else:
        server = request.getfixturevalue("ftpd" if request.param == "ftp" else "ftpsd")
    return Channel(request.param, relay_dir / "config.toml", server.home, server.events, server)


def drop(outbox: Path, sets: list[tuple[int, int]]) -> list[str]:
    outbox.mkdir(parents=True, exist_ok=True)
    gos = []
    for seq, total in sets:
        for part in range(1, total + 1):
            (outbox / fi_name(seq, "T", total, part)).write_bytes(
                b"<DmfA s='%d' p='%d'>\r\n%s</DmfA>\r\n" % (seq, part, b"<Line/>\r\n" * 300)
            )
        gos.append("GO" + fi_name(seq, "T", total, 1)[2:-2])
    return gos


def check_sent(ch: Channel, cfg: Config, gos: list[str], originals: dict[str, bytes]) -> None:
    j = open_journal_at(cfg.paths.journal_path)
    try:
        for go in gos:
            row = j.get_set(go)
            assert row is not None and row.state == State.SENT and row.archived, go
            for fi in row.parts:
                assert (ch.home / "INTEST" / fi).read_bytes() == originals[fi]
            assert (ch.home / "INTEST" / go).exists()
            if ch.events is None:
                continue
            events = ch.events()
            go_open = [i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.endswith("/" + go)]
            assert len(go_open) == 1, f"{go} written {len(go_open)} times"
            for name in row.parts + list(row.data.fs):
                closes = [i for i, (ev, p) in enumerate(events) if ev == "close" and p.endswith("/" + name)]
                assert closes and max(closes) < go_open[0], f"{name} not complete before {go}"
    finally:
        j.close()


def test_upload_in_order_exactly_once(channel: Channel) -> None:
    cfg = channel.cfg()
    relay = Relay(cfg)
    gos = drop(cfg.paths.outbox_dir, [(1, 1), (2, 3), (3, 2)])
    originals = {p.name: p.read_bytes() for p in cfg.paths.outbox_dir.iterdir()}
    report = relay.send_once(wait_for_settle=False)
    relay.close()
    assert report.upload.error is None and sorted(report.upload.sent) == sorted(gos)
    check_sent(channel, cfg, gos, originals)


def test_poll_mirrors_then_deletes(channel: Channel) -> None:
    out = channel.home / "OUTTEST"
    files = {f"FO.NOTI.999999.20261124.00001.T.2.{i}": b"<NOTIFICATION/>" * (100 * i) for i in (1, 2)}
    files["GO.NOTI.999999.20261124.00001.T.2"] = b""
    for name, content in files.items():
        (out / name).write_bytes(content)
    relay = Relay(channel.cfg())
    report = relay.poll_once()
    assert sorted(m.split("/")[1] for m in report.mirrored) == sorted(files)
    assert list(out.iterdir()) == []
    for name, content in files.items():
        assert (relay.spool.inbox / "OUTTEST" / name).read_bytes() == content
    relay.close()


def test_hostile_names_are_left_alone(channel: Channel) -> None:
    out = channel.home / "OUTTEST"
    hostile = ["..FO.ACRF.999999.20260101.00001.T", "FO.ACRF.999999.20260101.00001.T\t", "FO.ACRF.999999.2026.1.T"]
    for name in hostile:
        (out / name).write_bytes(b"x")
    (out / "FO.ACRF.999999.20260101.00002.T").mkdir()
    os.symlink("/etc/hostname", out / "FO.ACRF.999999.20260101.00003.T")
    (out / "GO.ACRF.999999.20260101.00003.T").write_bytes(b"")
    relay = Relay(channel.cfg())
    report = relay.poll_once()
    assert len(report.suspicious) >= 4
    left = {p.name for p in out.iterdir()}
    assert set(hostile) | {"FO.ACRF.999999.20260101.00002.T", "FO.ACRF.999999.20260101.00003.T"} <= left
    assert not (relay.spool.inbox / "OUTTEST" / "FO.ACRF.999999.20260101.00003.T").exists()
    relay.close()


@pytest.mark.slow
@pytest.mark.parametrize("kills", [4])
def test_sigkill_of_the_daemon(channel: Channel, kills: int) -> None:
    rng = seeded_rng("ONSS_RELAY_CRASH_SEED")
    cfg = channel.cfg()
    gos = drop(cfg.paths.outbox_dir, [(i, 1 + i % 2) for i in range(1, 41)])
    originals = {p.name: p.read_bytes() for p in cfg.paths.outbox_dir.iterdir()}
    daemon = Daemon(channel.config, channel.config.parent / "daemon.log")
    daemon.kill_at_random(rng, kills, 0.8)
    daemon.start()
    try:

        def all_sent() -> bool:
            j = open_journal_at(cfg.paths.journal_path)
            try:
                return j.counts() == {"sent": len(gos)} and len(j.unarchived_done()) == 0
            finally:
                j.close()

        assert wait_until(all_sent, 90, 0.2), daemon.log.read_text()[-2000:]
    finally:
        assert daemon.stop(15) == 0
    assert list(cfg.paths.outbox_dir.iterdir()) == []
    check_sent(channel, cfg, gos, originals)
