"""The uploader against a real OpenSSH sshd: order, exactly-once GO, host keys, authentication, disconnects."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from onss_relay.config import Config, load_config
from onss_relay.errors import PermanentRemoteError
from onss_relay.journal import State
from onss_relay.pipeline import Relay
from onss_relay.transport.sftp import SftpTransport
from tests.conftest import fi_name, sftp_config_text
from tests.fixtures.sshd import SshServer, keygen
from tests.fixtures.tcpproxy import TcpProxy
from tests.helpers import run_cli
from tests.test_signing import openssl_verifies

ENVS = {"R": "IN", "T": "INTEST", "S": "INTEST-S"}


def drop_sets(outbox: Path, sets: list[tuple[int, str, int]]) -> list[str]:
    outbox.mkdir(parents=True, exist_ok=True)
    gos = []
    for seq, env, total in sets:
        for part in range(1, total + 1):
            (outbox / fi_name(seq, env, total, part)).write_bytes(
                f"<DmfA seq='{seq}' part='{part}'>\r\n{'<Line/>' * 200}\r\n</DmfA>\r\n".encode()
            )
        gos.append("GO" + fi_name(seq, env, total, 1)[2:-2])
    return gos


def assert_order_and_once(sshd: SshServer, go: str, parts: list[str], fs: list[str]) -> None:
    """Every FI and FS of the set closed before its GO was opened, and the GO written exactly once."""
    events = sshd.events()
    go_open = next(i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.endswith("/" + go))
    for name in parts + fs:
        closes = [i for i, (ev, p) in enumerate(events) if ev == "close" and p.endswith("/" + name)]
        assert closes and max(closes) < go_open, f"{name} not closed before {go}"
    assert sshd.writes_of(go) == 1


def test_a_sets_fi_and_fs_are_put_in_one_flight_and_both_closed_before_its_go(
    sftp_cfg: Config, sshd: SshServer
) -> None:
    """The ONSS asks only that the GO comes once the declaration and its signature are complete: a set's FI and FS
    parts are put together (every FS opened before the last FI part is closed: two round trips fewer per set than
    FI, then FS), and every one of them is closed, size-checked, before the GO is opened."""
    relay = Relay(sftp_cfg)
    gos = drop_sets(relay.spool.outbox, [(1, "T", 1), (2, "T", 3)])
    report = relay.send_once(wait_for_settle=False)
    assert sorted(report.upload.sent) == sorted(gos)
    events = sshd.events()
    for go in gos:
        row = relay.journal.get_set(go)
        assert row is not None and row.state == State.SENT
        assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
        last_fi_closed = max(
            i for i, (ev, p) in enumerate(events) if ev == "close" and p.rsplit("/", 1)[1] in row.parts
        )
        fs_opened = [i for i, (ev, p) in enumerate(events) if ev == "open-write" and p.rsplit("/", 1)[1] in row.data.fs]
        assert len(fs_opened) == len(row.parts) and max(fs_opened) < last_fi_closed, events
    relay.close()


def test_sets_land_in_their_folder_in_order(sftp_cfg: Config, sshd: SshServer, identity_dir: Path) -> None:
    relay = Relay(sftp_cfg)
    gos = drop_sets(relay.spool.outbox, [(1, "R", 1), (2, "T", 3), (3, "S", 1), (4, "T", 1)])
    originals = {p.name: p.read_bytes() for p in relay.spool.outbox.iterdir()}
    report = relay.send_once(wait_for_settle=False)
    assert sorted(report.upload.sent) == sorted(gos) and report.upload.error is None
    for go in gos:
        row = relay.journal.get_set(go)
        assert row is not None and row.state == State.SENT
        folder = sshd.home / ENVS[row.env]
        for fi in row.parts:
            assert (folder / fi).read_bytes() == originals[fi]
            fs = folder / ("FS" + fi[2:])  # S too: every send carries its FS (signing.sign_in_s, default true)
            assert openssl_verifies(sshd.root, folder / fi, fs.read_bytes(), identity_dir / "signer.crt")
        assert (folder / go).read_bytes() == b""
        assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
    assert list(relay.spool.outbox.iterdir()) == []
    relay.close()


@pytest.mark.slow
def test_connections_are_sftp_sessions_on_one_ssh_connection(sftp_cfg: Config, sshd: SshServer) -> None:
    """remote.connections = 4: four SFTP sessions carry the sets, over one SSH login, driven by one thread."""
    relay = Relay(sftp_cfg)
    gos = drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 301)])
    report = relay.send_once(wait_for_settle=False)
    assert sorted(report.upload.sent) == sorted(gos)
    assert sshd.ssh_logins() == 1 and sshd.sftp_sessions() == 4
    for go in gos:
        assert sshd.writes_of(go) == 1
    relay.close()


def test_a_kept_connection_is_reused_and_a_dropped_one_replaced(sftp_cfg: Config, sshd: SshServer) -> None:
    relay = Relay(sftp_cfg)
    drop_sets(relay.spool.outbox, [(1, "T", 1)])
    relay.send_once(wait_for_settle=False)  # a one-shot send closes what it opened…
    assert sshd.ssh_logins() == 1
    for seq in (2, 3):  # …the daemon's rounds keep it
        drop_sets(relay.spool.outbox, [(seq, "T", 1)])
        relay.claim()
        relay.signer.sign_queued()
        assert len(relay.uploader.upload_pending().sent) == 1
    assert sshd.ssh_logins() == 2
    [kept] = relay.uploader.pool.idle()
    kept._transport.close()  # type: ignore[attr-defined]  # the server or the network dropped it while idle
    drop_sets(relay.spool.outbox, [(4, "T", 1)])
    relay.claim()
    relay.signer.sign_queued()
    report = relay.uploader.upload_pending()
    assert report.error is None and len(report.sent) == 1
    assert sshd.ssh_logins() == 3
    relay.close()
    assert relay.uploader.pool.idle() == []


def test_unknown_host_key_is_refused_with_how_to_add_it(sftp_dir: Path, sshd: SshServer) -> None:
    (sftp_dir / "known_hosts").write_text("")
    cfg = load_config(sftp_dir / "config.toml", environ={})
    with pytest.raises(PermanentRemoteError, match=r"not in remote.known_hosts .* ssh-keyscan -p \d+ 127.0.0.1"):
        SftpTransport.connect(cfg.remote)


def test_changed_host_key_is_refused(sftp_dir: Path, sshd: SshServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host")
    pub = Path(str(other) + ".pub").read_text().split()
    (sftp_dir / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    cfg = load_config(sftp_dir / "config.toml", environ={})
    with pytest.raises(PermanentRemoteError, match="CHANGED"):
        SftpTransport.connect(cfg.remote)
    # a known_hosts entry for another port does not vouch for this one
    (sftp_dir / "known_hosts").write_text(sshd.known_hosts_line().replace(f":{sshd.port}", ":1"))
    with pytest.raises(PermanentRemoteError, match="not in remote.known_hosts"):
        SftpTransport.connect(cfg.remote)


@pytest.mark.parametrize(
    "kind, legacy", [("ed25519", False), ("ecdsa", False), ("rsa", False), ("rsa", True), ("rsa-encrypted", True)]
)
def test_key_kinds(sftp_dir: Path, sshd: SshServer, client_keys: dict[str, Path], kind: str, legacy: bool) -> None:
    extra = f"legacy_ssh_rsa = {str(legacy).lower()}\n"
    if kind == "rsa-encrypted":
        extra += f'passphrase_file = "{client_keys["passphrase"]}"\n'
    (sftp_dir / "config.toml").write_text(sftp_config_text(sshd, client_keys[kind], sftp_dir / "known_hosts", extra))
    t = SftpTransport.connect(load_config(sftp_dir / "config.toml", environ={}).remote)
    assert t.list("IN") == []
    t.close()
    if legacy:
        assert "RSA SHA256:" in sshd.sshd_log.read_text()


def test_encrypted_key_without_passphrase_file(sftp_dir: Path, sshd: SshServer, client_keys: dict[str, Path]) -> None:
    (sftp_dir / "config.toml").write_text(
        sftp_config_text(sshd, client_keys["rsa-encrypted"], sftp_dir / "known_hosts")
    )
    with pytest.raises(PermanentRemoteError, match="encrypted; set remote.passphrase_file"):
        SftpTransport.connect(load_config(sftp_dir / "config.toml", environ={}).remote)


def test_aes_gcm_is_preferred_and_a_server_without_it_still_works(
    sftp_dir: Path, sshd: SshServer, tmp_path: Path, client_keys: dict[str, Path]
) -> None:
    t = SftpTransport.connect(load_config(sftp_dir / "config.toml", environ={}).remote)
    assert t.cipher() == "aes128-gcm@openssh.com"  # MAC checked in C, not byte by byte in Python
    t.close()
    server = SshServer(tmp_path / "ctr-only", extra_config="Ciphers aes256-ctr\n")
    server.setup()
    server.authorize(Path(str(client_keys["rsa"]) + ".pub"))
    server.start()
    try:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_hosts_line())
        (sftp_dir / "config.toml").write_text(sftp_config_text(server, client_keys["rsa"], known))
        t = SftpTransport.connect(load_config(sftp_dir / "config.toml", environ={}).remote)
        assert t.cipher() == "aes256-ctr"
        assert t.list("IN") == []
        t.close()
    finally:
        server.stop()


def test_wrong_user_key_exits_3_with_one_sentence(sftp_dir: Path, sshd: SshServer, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger", "rsa", bits=2048)
    (sftp_dir / "config.toml").write_text(sftp_config_text(sshd, stranger, sftp_dir / "known_hosts"))
    drop_sets(sftp_dir / "spool" / "outbox", [(1, "T", 1)])
    r = run_cli("send", "--once", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 3
    assert "authentication refused for user" in r.stderr and "registered" in r.stderr and "Traceback" not in r.stderr
    assert len(list((sftp_dir / "spool" / "outbox").iterdir())) == 1  # kept queued
    r = run_cli("check", "--config", str(sftp_dir / "config.toml"))
    assert r.returncode == 3 and "✗ remote: authentication refused" in r.stdout


def test_legacy_rsa_against_a_server_without_ssh_rsa(
    tmp_path: Path, client_keys: dict[str, Path], relay_dir: Path
) -> None:
    server = SshServer(tmp_path / "modern", accept_ssh_rsa=False)
    server.setup()
    server.authorize(Path(str(client_keys["rsa"]) + ".pub"))
    server.start()
    try:
        (relay_dir / "known_hosts").write_text(server.known_hosts_line())
        (relay_dir / "config.toml").write_text(sftp_config_text(server, client_keys["rsa"], relay_dir / "known_hosts"))
        with pytest.raises(PermanentRemoteError, match="legacy_ssh_rsa is on"):
            SftpTransport.connect(load_config(relay_dir / "config.toml", environ={}).remote)
        text = sftp_config_text(server, client_keys["rsa"], relay_dir / "known_hosts", "legacy_ssh_rsa = false\n")
        (relay_dir / "config.toml").write_text(text)
        SftpTransport.connect(load_config(relay_dir / "config.toml", environ={}).remote).close()
    finally:
        server.stop()


def test_permission_denied_stops_and_keeps_everything_queued(sftp_cfg: Config, sshd: SshServer) -> None:
    (sshd.root / "readonly").write_text("")
    relay = Relay(sftp_cfg)
    drop_sets(relay.spool.outbox, [(1, "T", 1), (2, "T", 1)])
    report = relay.send_once(wait_for_settle=False)
    assert isinstance(report.upload.error, PermanentRemoteError) and "permission denied" in str(report.upload.error)
    assert len(list(relay.spool.outbox.iterdir())) == 2
    assert {r.state for r in relay.journal.recent_sets()} <= {State.SIGNED, State.UPLOADING}
    (sshd.root / "readonly").unlink()
    assert len(relay.send_once(wait_for_settle=False).upload.sent) == 2
    relay.close()


def test_missing_remote_folder_is_a_clear_permanent_error(sftp_cfg: Config, sshd: SshServer) -> None:
    (sshd.home / "INTEST").rmdir()
    relay = Relay(sftp_cfg)
    drop_sets(relay.spool.outbox, [(1, "T", 1)])
    report = relay.send_once(wait_for_settle=False)
    assert "INTEST" in str(report.upload.error) and "no such remote file or folder" in str(report.upload.error)
    relay.close()


@pytest.mark.slow
def test_disconnects_mid_transfer_still_deliver_exactly_once(
    sftp_dir: Path, sshd: SshServer, client_keys: dict[str, Path]
) -> None:
    proxy = TcpProxy(sshd.port)
    text = sftp_config_text(sshd, client_keys["rsa"], sftp_dir / "known_hosts").replace(
        f"port = {sshd.port}", f"port = {proxy.port}"
    )
    (sftp_dir / "known_hosts").write_text(sshd.known_hosts_line().replace(str(sshd.port), str(proxy.port)))
    (sftp_dir / "config.toml").write_text(text)
    cfg = load_config(sftp_dir / "config.toml", environ={})
    relay = Relay(cfg, max_attempts=50)
    relay.uploader.max_wait = 0.2
    gos = drop_sets(relay.spool.outbox, [(i, "T", 1 + i % 3) for i in range(1, 31)])
    proxy.cut_after = 60_000  # every connection dies after ~60 kB from the client: several sets in
    report = relay.send_once(wait_for_settle=False)
    sent = list(report.upload.sent)
    for _ in range(20):  # sets cut with a request in flight are uncertain: sent once their quiet period is over
        if not report.upload.waiting or report.upload.error:
            break
        time.sleep(cfg.remote.quiet_period)
        report = relay.send_once(wait_for_settle=False)
        sent += report.upload.sent
    proxy.close()
    assert report.upload.error is None and sorted(sent) == sorted(gos)
    assert proxy.cuts >= 3
    for go in gos:
        row = relay.journal.get_set(go)
        assert row is not None and row.state == State.SENT
        assert sshd.writes_of(go) == 1, go
        for fi in row.parts:
            assert (sshd.home / "INTEST" / fi).read_bytes() == (relay.spool.sent.rglob(fi).__next__()).read_bytes()
        assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
    relay.close()


def test_a_relay_that_lost_its_leadership_puts_nothing(sftp_cfg: Config, sshd: SshServer) -> None:
    """The lease is checked before every step's files are opened: a relay told it is no longer the active one
    (uploader.before_put raises Fenced) opens no FI, FS or GO on the server, and says so."""
    from onss_relay.errors import Fenced

    relay = Relay(sftp_cfg)
    gos = drop_sets(relay.spool.outbox, [(1, "T", 1), (2, "T", 2)])

    def lapsed() -> None:
        raise Fenced("postgresql://…: no GO sent: its lease was not renewed in time")

    relay.uploader.before_put = lapsed
    report = relay.send_once(wait_for_settle=False)
    assert report.upload.sent == [] and "no GO sent" in str(report.upload.error)
    assert not [p for ev, p in sshd.events() if ev == "open-write"]
    assert {relay.journal.get_set(go).state for go in gos} <= {State.SIGNED, State.UPLOADING}  # type: ignore[union-attr]
    relay.close()


def test_a_set_costs_four_round_trips_two_per_step(
    sftp_cfg: Config, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27: a file's WRITEs, its FSTAT (the size check) and its CLOSE go in one flight after its OPEN, so a
    one-part set costs four round trips (FI and FS together, then GO: two each), not eleven (four for the FI and
    the FS, three for the GO); FI and FS are still closed and size-checked before the GO is opened, and the GO put once. The GO,
    empty and opened with O_TRUNC, is closed without an FSTAT (its size proves nothing)."""
    from paramiko.sftp import CMD_NAMES

    from onss_relay.transport import paramiko_async

    events: list[tuple[str, str]] = []
    real_request, real_read = paramiko_async.AsyncSftp.request, paramiko_async.AsyncSftp.read_reply

    def request(self: paramiko_async.AsyncSftp, callback: object, command: int, *args: object) -> None:
        events.append(("sent", CMD_NAMES[command]))
        real_request(self, callback, command, *args)  # type: ignore[arg-type]

    def read_reply(self: paramiko_async.AsyncSftp) -> None:
        events.append(("read", ""))
        real_read(self)

    monkeypatch.setattr(paramiko_async.AsyncSftp, "request", request)
    monkeypatch.setattr(paramiko_async.AsyncSftp, "read_reply", read_reply)
    relay = Relay(sftp_cfg)
    try:
        [go] = drop_sets(relay.spool.outbox, [(1, "T", 1)])
        report = relay.send_once(wait_for_settle=False)
        assert report.upload.sent == [go], report
        flights = [[]]  # requests sent together, before the next reply is read
        for kind, name in events:
            if kind == "read" and flights[-1]:
                flights.append([])
            elif kind == "sent":
                flights[-1].append(name)
        flights = [f for f in flights if f]
        # FI and FS are one step: their OPENs go together, then each file's WRITEs, FSTAT and CLOSE once its
        # handle is read (one flight or two, as the replies are read), then the GO: four round trips, not six
        assert flights[0] == ["open", "open"] and flights[-2:] == [["open"], ["close"]], flights
        middle = flights[1:-2]
        assert len(middle) in (1, 2) and all(f[0] == "write" for f in middle), flights
        assert sorted(sum(middle, [])) == sorted(["write", "fstat", "close"] * 2), flights
        row = relay.journal.get_set(go)
        assert row is not None and row.state == State.SENT
        assert_order_and_once(sshd, go, row.parts, list(row.data.fs))
    finally:
        relay.close()


def test_a_dry_queue_is_not_asked_again_at_every_reply_while_sets_are_signed(
    sftp_cfg: Config, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 (cpu27): while the signer may still add sets, a queue found dry is left alone for a moment
    (upload.DRY_WAIT): before, every turn of the upload loop (every reply read) asked the signing child whether
    it was done (a pipe poll) and read the journal again, tens of times per set sent, the largest waste of the
    uploading process. Every set is still sent, and the round ends once the signer says it is done."""
    from onss_relay.stages import upload, upload_queue

    monkeypatch.setattr(upload, "DRY_WAIT", 1.0)  # wide: the count below cannot depend on the machine's speed
    relay = Relay(sftp_cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 21)])
        relay.claim()
        relay.signer.sign_queued()
        done: list[str] = []  # sets whose GO the server closed (recorded sent in a batch later)
        real_add = upload_queue.SentBatch.add

        def add(self: upload_queue.SentBatch, row: object, folder: str, detail: str = "GO uploaded") -> None:
            done.append(folder)
            real_add(self, row, folder, detail)  # type: ignore[arg-type]

        monkeypatch.setattr(upload_queue.SentBatch, "add", add)
        asks = {"n": 0}

        def more() -> bool:  # a signer still at work until every GO is on the server
            asks["n"] += 1
            return len(done) < len(gos)

        report = relay.uploader.upload_pending(more=more)
        assert sorted(report.sent) == sorted(gos) and report.error is None
        # 20 sets, ~120 replies: before, at least one ask per reply read; now a few per DRY_WAIT
        assert asks["n"] < len(gos), asks
        for go in gos:
            assert sshd.writes_of(go) == 1
    finally:
        relay.close()


def test_refills_while_sets_are_signed_read_only_the_sets_new_to_the_round(
    sftp_cfg: Config, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 27 (cpu27): while the signer may still add sets, the upload queue is refilled from the journal with
    the sets written since its last read; those were also every set in flight that passed a gate meanwhile (up
    to 256, each parsed again at every refill). After the first full read only signed sets are new to a round:
    40 sets cost 40 rows read, not hundreds."""
    from onss_relay.journal.sql_journal import SqlJournal
    from onss_relay.stages import upload_queue

    relay = Relay(sftp_cfg)
    try:
        gos = drop_sets(relay.spool.outbox, [(i, "T", 1) for i in range(1, 41)])
        relay.claim()
        relay.signer.sign_queued()
        done: list[str] = []
        real_add = upload_queue.SentBatch.add

        def add(self: upload_queue.SentBatch, row: object, folder: str, detail: str = "GO uploaded") -> None:
            done.append(folder)
            real_add(self, row, folder, detail)  # type: ignore[arg-type]

        rows_read = {"n": 0}
        real_sets_in = SqlJournal.sets_in

        def sets_in(self: SqlJournal, *states: State, **kw: object) -> list[object]:
            rows = real_sets_in(self, *states, **kw)  # type: ignore[arg-type]
            rows_read["n"] += len(rows)
            return rows  # type: ignore[return-value]

        monkeypatch.setattr(upload_queue.SentBatch, "add", add)
        monkeypatch.setattr(SqlJournal, "sets_in", sets_in)
        report = relay.uploader.upload_pending(more=lambda: len(done) < len(gos))  # a signer at work till the end
        monkeypatch.undo()
        assert sorted(report.sent) == sorted(gos) and report.error is None
        assert rows_read["n"] <= len(gos) + 5, rows_read  # before: every in-flight set again at each refill
        for go in gos:
            assert sshd.writes_of(go) == 1
    finally:
        relay.close()
