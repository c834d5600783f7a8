"""One contract, every transport: the same operations behave the same over local folders and real SFTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.errors import PermanentRemoteError
from onss_relay.transport import open_transport
from onss_relay.transport.base import SizeLimitExceeded, Transport


@pytest.fixture(params=["local", "sftp", "ftp", "ftps"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Transport, Path]]:
    """Yield a connected transport and the local folder behind it (to look at the 'server' directly)."""
    if request.param == "local":
        cfg: Config = request.getfixturevalue("cfg")
        home = tmp_path / "remote"
    elif request.param == "sftp":
        cfg = request.getfixturevalue("sftp_cfg")
        home = request.getfixturevalue("sshd").home
    else:
        server = request.getfixturevalue("ftpd" if request.param == "ftp" else "ftpsd")
        cfg = load_config(request.getfixturevalue("relay_dir") / "config.toml", environ={})
        home = server.home
    t = open_transport(cfg)
    yield t, home
    t.close()


def test_put_size_exists_list_get_delete(remote: tuple[Transport, Path], tmp_path: Path) -> None:
    t, home = remote
    src = tmp_path / "src"
    src.write_bytes(b"\r\n".join(b"line %d" % i for i in range(50000)))
    with src.open("rb") as f:
        t.put(f, "INTEST", "FI.A")
    t.put_bytes(b"", "INTEST", "GO.A")
    assert (home / "INTEST" / "FI.A").read_bytes() == src.read_bytes()
    assert t.size("INTEST", "FI.A") == src.stat().st_size and t.size("INTEST", "nope") is None
    assert t.exists("INTEST", "GO.A") and not t.exists("IN", "GO.A")
    assert [(e.name, e.kind) for e in t.list("INTEST")] == [("FI.A", "file"), ("GO.A", "file")]
    buf = io.BytesIO()
    assert t.get("INTEST", "FI.A", buf, 1 << 30) == src.stat().st_size and buf.getvalue() == src.read_bytes()
    t.delete("INTEST", "FI.A")
    t.delete("INTEST", "FI.A")  # deleting what is gone is not an error
    assert not (home / "INTEST" / "FI.A").exists()


def test_listing_shows_directories_and_links_for_what_they_are(remote: tuple[Transport, Path]) -> None:
    t, home = remote
    (home / "OUT" / "adir").mkdir()
    (home / "OUT" / "alink").symlink_to("/etc/passwd")
    kinds = {e.name: e.kind for e in t.list("OUT")}
    assert kinds["adir"] == "dir"
    assert kinds["alink"] in ("link", "file")  # FTP servers show a link as what it points to …
    with pytest.raises(PermanentRemoteError):  # … but none lets us read outside the home
        t.get("OUT", "alink", io.BytesIO(), 1 << 20)


def test_size_cap(remote: tuple[Transport, Path]) -> None:
    t, home = remote
    (home / "OUT" / "big").write_bytes(b"x" * 100_000)
    with pytest.raises(SizeLimitExceeded):
        t.get("OUT", "big", io.BytesIO(), 50_000)


@pytest.mark.parametrize(
    "folder, name",
    [
        ("..", "x"),
        ("IN/..", "x"),
        ("IN", "../x"),
        ("IN", "a/b"),
        ("IN", ".."),
        ("IN", ""),
        ("/etc", "passwd"),
        ("IN", "x" * 300),
    ],
)
def test_paths_outside_the_six_folders_are_never_built(remote: tuple[Transport, Path], folder: str, name: str) -> None:
    t, _ = remote
    with pytest.raises(ValueError):
        t.put_bytes(b"x", folder, name)


def test_missing_folder_is_permanent(remote: tuple[Transport, Path]) -> None:
    t, home = remote
    (home / "OUTTEST-S").rmdir()
    with pytest.raises(PermanentRemoteError):
        t.list("OUTTEST-S")
