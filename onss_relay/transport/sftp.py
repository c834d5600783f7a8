"""SFTP to the transfer point with paramiko: key authentication, strict host-key checking, streamed transfers.

Errors come out as TransientRemoteError (network, timeouts, server closing: retry) or PermanentRemoteError
(host key unknown or changed, authentication refused, permission denied: stop and explain).
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import posixpath
import socket
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import paramiko
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from onss_relay.config import RemoteConfig, read_secret
from onss_relay.errors import ConfigError, PermanentRemoteError, TransientRemoteError
from onss_relay.transport.base import (
    RemoteEntry,
    Upload,
    abort_socket,
    check_folder,
    check_remote_name,
    classify_os_error,
    copy_capped,
)
from onss_relay.transport.batch import Fetch
from onss_relay.transport.paramiko_async import AsyncSftp
from onss_relay.transport.sftp_fetch import fetch_many, remove_many
from onss_relay.transport.sftp_pipeline import SftpPipeline, run_pipelines

log = structlog.get_logger(__name__)

LEGACY_RSA = {"pubkeys": ["rsa-sha2-256", "rsa-sha2-512"]}
AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
NETWORK_ERRORS = (OSError, EOFError, paramiko.SSHException, socket.timeout)


def host_entry(host: str, port: int) -> str:
    """Given host and port, return the known_hosts lookup name (OpenSSH writes [host]:port for port ≠ 22)."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)  # "SHA256:…", as ssh-keygen -l prints it


def load_known_hosts(path: Path) -> paramiko.HostKeys:
    """Given remote.known_hosts, load it; a line that is not a host key line is a ConfigError naming it (paramiko
    would skip it silently, and the host would then look unknown)."""
    try:
        _check_known_hosts_lines(path)
        return paramiko.HostKeys(str(path))
    except FileNotFoundError:
        raise PermanentRemoteError(f"remote.known_hosts = {str(path)!r}: file not found") from None
    except (OSError, paramiko.SSHException) as e:
        raise PermanentRemoteError(f"remote.known_hosts = {str(path)!r}: cannot read it ({e})") from None


def _check_known_hosts_lines(path: Path) -> None:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith(("#", "@")):  # comments; @cert-authority/@revoked markers
                continue
            try:
                ok = len(line.split()) >= 3
                paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)  # None for key types paramiko lacks: fine
            except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError, binascii.Error):
                ok = False
            if not ok:
                raise ConfigError(
                    f"remote.known_hosts = {str(path)!r}, line {lineno}: not a known_hosts line "
                    "(expected: host key-type base64-key, as `ssh-keyscan` prints)"
                )


def load_private_key(path: Path, passphrase: bytes | None) -> paramiko.PKey:
    try:
        return _load_openssh_key(path, passphrase) or paramiko.PKey.from_path(path, passphrase)
    except FileNotFoundError:
        raise ConfigError(f"remote.private_key = {str(path)!r}: file not found") from None
    except PermissionError:  # a local problem, not the remote's: the service user cannot read its own key
        raise ConfigError(
            f"remote.private_key = {str(path)!r}: permission denied; the relay's user must be able to read it"
            " (mode 0640, group of the service: `chown root:onss-relay`; in a container uid 10001)"
        ) from None
    except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "password not provided"
        raise PermanentRemoteError(
            f"remote.private_key = {str(path)!r}: the key is encrypted; set remote.passphrase_file"
        ) from None
    except (paramiko.SSHException, ValueError, OSError) as e:
        raise PermanentRemoteError(
            f"remote.private_key = {str(path)!r}: cannot load the key ({e}); wrong passphrase?"
        ) from None


def _load_openssh_key(path: Path, passphrase: bytes | None) -> paramiko.PKey | None:
    """Given an OpenSSH-format RSA or ECDSA key file, load it once (paramiko's from_path parses and checks an
    RSA key twice, ~0.1 s); return None for other formats and key types, for paramiko to load."""
    data = path.read_bytes()
    if not data.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
        return None
    # our own key, from a file only we can read: the costly RSA consistency check guards against hostile keys
    key = load_ssh_private_key(data, passphrase, unsafe_skip_rsa_key_validation=True)
    if isinstance(key, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey(vals=(key, key.public_key()))
    return None


def _prefer_known_key_types(t: paramiko.Transport, known: list[str]) -> None:
    """Offer the host key types we hold first, so the server shows the key we can check."""
    opts = t.get_security_options()
    wanted: list[str] = []
    for kt in known:
        wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if kt == "ssh-rsa" else [kt]
    first = [k for k in wanted if k in opts.key_types]
    opts.key_types = first + [k for k in opts.key_types if k not in first]


def _prefer_aead_ciphers(t: paramiko.Transport) -> None:
    """Offer AES-GCM first: it authenticates in C, where the *-ctr + HMAC pairs compare every MAC in Python."""
    opts = t.get_security_options()
    aead = [c for c in AEAD_CIPHERS if c in opts.ciphers]
    opts.ciphers = aead + [c for c in opts.ciphers if c not in aead]


class SftpTransport:
    """One SSH connection with an SFTP session on it, rooted at remote.base_dir; uploads use up to
    ``sessions`` SFTP sessions (channels) on the same connection, driven from the calling thread."""

    delivers_late = True  # a stalled network path can deliver a request after the connection was given up

    def __init__(
        self,
        transport: paramiko.Transport,
        sftp: paramiko.SFTPClient,
        base_dir: str,
        sessions: int = 1,
        timeout: float | None = None,
    ) -> None:
        self._transport = transport
        self._sftp = sftp
        self.base_dir = base_dir
        self.sessions = sessions
        self.timeout = timeout
        self._upload_sessions = [sftp]  # appended to by the thread opening the others (prepare_uploads)
        self._sessions_lock = threading.Lock()
        self._opener: threading.Thread | None = None

    @classmethod
    def connect(cls, cfg: RemoteConfig) -> SftpTransport:
        """Given the remote configuration, connect, check the host key, authenticate and open SFTP."""
        assert cfg.private_key is not None and cfg.known_hosts is not None  # config validation ensures it
        known = load_known_hosts(cfg.known_hosts)
        pkey = load_private_key(cfg.private_key, read_secret(cfg.passphrase_file, "remote.passphrase_file"))
        entry = host_entry(cfg.host, cfg.port)
        try:
            sock = prompt_socket(socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout))
        except OSError as e:
            raise TransientRemoteError(f"cannot reach {cfg.host}:{cfg.port}: {e.strerror or e}") from None
        t = paramiko.Transport(sock, disabled_algorithms=LEGACY_RSA if cfg.legacy_ssh_rsa else None)
        try:
            expected = known.lookup(entry)
            if expected:
                _prefer_known_key_types(t, list(expected.keys()))
            _prefer_aead_ciphers(t)
            t.start_client(timeout=cfg.timeout)
            _check_host_key(t.get_remote_server_key(), expected, entry, cfg)
            _authenticate(t, cfg, pkey)
            t.set_keepalive(int(cfg.keepalive))
            sftp = _open_sftp(t, cfg.timeout)
            channel = sftp.get_channel()
            assert channel is not None
            channel.settimeout(cfg.timeout)
        except PermanentRemoteError:
            t.close()
            raise
        except NETWORK_ERRORS as e:
            t.close()
            raise TransientRemoteError(
                f"SSH connection to {cfg.host}:{cfg.port} failed: {e or type(e).__name__}"
            ) from None
        log.debug("sftp_connected", host=cfg.host, port=cfg.port, user=cfg.username)
        return cls(t, sftp, cfg.base_dir, cfg.connections, cfg.timeout)

    def cipher(self) -> str:
        """The cipher negotiated for what this side sends (for check and tests)."""
        return str(self._transport.local_cipher)

    def _path(self, folder: str, name: str | None = None) -> str:
        base = posixpath.join(self.base_dir, check_folder(folder))
        return base if name is None else posixpath.join(base, check_remote_name(name))

    def list(self, folder: str) -> list[RemoteEntry]:
        try:
            attrs = self._sftp.listdir_attr(self._path(folder))
        except NETWORK_ERRORS as e:
            raise _classify(e, f"listing {folder}") from None
        return sorted((RemoteEntry(a.filename, a.st_size or 0, _kind(a.st_mode)) for a in attrs), key=lambda e: e.name)

    def scan(self, folder: str) -> Iterator[RemoteEntry]:
        try:
            for a in self._sftp.listdir_iter(self._path(folder)):  # READDIR by READDIR, never the whole folder
                yield RemoteEntry(a.filename, a.st_size or 0, _kind(a.st_mode))
        except NETWORK_ERRORS as e:
            raise _classify(e, f"listing {folder}") from None

    def put(self, src: BinaryIO, folder: str, name: str) -> None:
        path = self._path(folder, name)
        try:
            with self._sftp.open(path, "wb") as dst:
                dst.set_pipelined(True)
                while chunk := src.read(32768):
                    dst.write(chunk)
        except NETWORK_ERRORS as e:
            raise _classify(e, f"uploading {folder}/{name}") from None

    def put_bytes(self, data: bytes, folder: str, name: str) -> None:
        try:
            with self._sftp.open(self._path(folder, name), "wb") as dst:
                if data:
                    dst.write(data)
        except NETWORK_ERRORS as e:
            raise _classify(e, f"uploading {folder}/{name}") from None

    def get(self, folder: str, name: str, dest: BinaryIO, max_size: int) -> int:
        path = self._path(folder, name)
        try:
            st = self._sftp.lstat(path)
            if st.st_mode is None or not stat.S_ISREG(st.st_mode):
                raise PermanentRemoteError(f"{folder}/{name} is not a regular file")
            with self._sftp.open(path, "rb") as src:
                src.prefetch(st.st_size)
                return copy_capped(src, dest, max_size, f"{folder}/{name}")
        except NETWORK_ERRORS as e:
            raise _classify(e, f"downloading {folder}/{name}") from None

    def delete(self, folder: str, name: str) -> None:
        try:
            self._sftp.remove(self._path(folder, name))
        except FileNotFoundError:
            return
        except NETWORK_ERRORS as e:
            raise _classify(e, f"deleting {folder}/{name}") from None

    def get_many(self, folder: str, fetches: Sequence[Fetch], max_size: int) -> None:
        """Given files of one folder, copy them with many in flight on the poll's session (sftp_fetch.py)."""
        items = [(f, self._path(folder, f.name), f"{folder}/{f.name}") for f in fetches]
        try:
            fetch_many(AsyncSftp(self._sftp), _classify, items, max_size)
        except NETWORK_ERRORS as e:
            raise _classify(e, f"downloading from {folder}") from None

    def delete_many(self, folder: str, names: Sequence[str]) -> None:
        """Given names in one folder, remove them with many in flight on the poll's session (sftp_fetch.py)."""
        items = [(self._path(folder, name), f"{folder}/{name}") for name in names]
        try:
            remove_many(AsyncSftp(self._sftp), _classify, items)
        except NETWORK_ERRORS as e:
            raise _classify(e, f"deleting from {folder}") from None

    def size(self, folder: str, name: str) -> int | None:
        try:
            st = self._sftp.lstat(self._path(folder, name))
        except FileNotFoundError:
            return None
        except NETWORK_ERRORS as e:
            raise _classify(e, f"checking {folder}/{name}") from None
        return st.st_size if st.st_mode is not None and stat.S_ISREG(st.st_mode) else None

    def exists(self, folder: str, name: str) -> bool:
        return self.size(folder, name) is not None

    def run_uploads(self, uploads: Iterator[Upload | None], window: int = 64) -> None:
        """Given uploads, run up to ``window`` at once on the connection, spread over the sessions: those open
        now (the first alone may carry the whole window), and the others as they open, each then taking its
        share (fewer sessions when the window is smaller than their number: after failures, one set at a time
        on one session)."""
        self.prepare_uploads()
        wanted = min(self.sessions, max(1, window))
        taken = 0

        def new_pipelines() -> list[SftpPipeline]:
            nonlocal taken
            with self._sessions_lock:
                fresh = self._upload_sessions[taken:wanted]
            taken += len(fresh)
            return [
                SftpPipeline(s, lambda f: self._path(f.folder, f.name), _classify)
                for s in fresh  # window: shared
            ]

        try:
            run_pipelines(new_pipelines, uploads, self.timeout, window=max(1, window))
        except NETWORK_ERRORS as e:
            raise _classify(e, "uploading") from None

    def alive(self, ask: bool = True) -> bool:
        """Given a connection kept idle, ask the server for the base folder's attributes (one round trip, within
        remote.timeout): True when it answers, so that no set's request goes on a connection dead in silence.
        Without ``ask``: whether the connection is still open, as this side knows."""
        if not self._transport.is_active() or not ask:
            return bool(self._transport.is_active())
        try:
            self._sftp.stat(self.base_dir)
        except NETWORK_ERRORS:
            return False
        return True

    def prepare_uploads(self) -> None:
        """Open the extra SFTP sessions in the background (each costs round trips and a server process):
        uploads start on the first one and spread as the others open."""
        with self._sessions_lock:
            if self._opener is not None or len(self._upload_sessions) >= self.sessions:
                return
            self._opener = threading.Thread(target=self._open_upload_sessions, name="sftp-sessions", daemon=True)
        self._opener.start()

    def _open_upload_sessions(self) -> None:
        """Open the extra SFTP sessions, all at once (each costs three round trips: at 20 ms each way, one after
        another the last opened ~0.4 s after the first); a server that refuses more (MaxSessions) gets what it
        allows."""
        refused: list[str] = []

        def open_one() -> None:
            try:
                sftp = paramiko.SFTPClient.from_transport(self._transport)
            except paramiko.ChannelException as e:
                refused.append(str(e))
                return
            except NETWORK_ERRORS:
                return  # the connection failed: the uploads on it see it and reconnect
            assert sftp is not None
            channel = sftp.get_channel()
            assert channel is not None
            channel.settimeout(self.timeout)
            with self._sessions_lock:
                self._upload_sessions.append(sftp)

        openers = [
            threading.Thread(target=open_one, name="sftp-session", daemon=True)
            for _ in range(self.sessions - len(self._upload_sessions))
        ]
        for t in openers:
            t.start()
        for t in openers:
            t.join()
        if refused:
            log.warning(
                "sftp_sessions_limited",
                opened=len(self._upload_sessions),
                wanted=self.sessions,
                detail=f"the server refused another SFTP session ({refused[0]}); uploading over fewer",
            )
            self.sessions = len(self._upload_sessions)

    def close(self) -> None:
        with self._sessions_lock:
            sessions = list(self._upload_sessions)
        for sftp in sessions:
            with contextlib.suppress(Exception):
                sftp.close()
        with contextlib.suppress(Exception):
            self._transport.close()

    def abort(self) -> None:
        """Reset the connection (SO_LINGER 0) without closing the sessions first: nothing still queued is sent."""
        abort_socket(self._transport.sock)
        with contextlib.suppress(Exception):
            self._transport.close()


def _kind(mode: int | None) -> str:
    if mode is None:
        return "other"
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "other"


def _classify(e: BaseException, what: str) -> PermanentRemoteError | TransientRemoteError:
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS):
        return classify_os_error(e, what).as_answer()  # type: ignore[return-value]  # a STATUS reply said so
    if isinstance(e, PermanentRemoteError | TransientRemoteError):
        return e
    return TransientRemoteError(f"{what}: {e or type(e).__name__}")


class PromptSocket(socket.socket):
    """A TCP socket that never holds a packet back and acknowledges what it receives at once.

    SSH is a conversation of small packets. Nagle's algorithm (on by default) holds a small write until what was
    sent before is acknowledged; the peer's kernel delays that acknowledgement up to 40 ms when it has nothing
    to send. OpenSSH's server keeps Nagle on for sessions without a terminal (SFTP): a reply written just after
    another waits for this side's acknowledgement, which Linux delays too once a connection looks interactive.
    Measured against sshd on loopback: connect, authenticate and open SFTP took 125 ms, 80 of them two such
    waits; 35 ms with TCP_NODELAY and the acknowledgement re-armed after each read (TCP_QUICKACK is not sticky:
    the kernel returns to delayed acknowledgements on its own). Linux only; elsewhere only TCP_NODELAY."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):  # the socket closed meanwhile: the next read says so
            self.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        return data


QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # 0: not Linux


def prompt_socket(sock: socket.socket) -> socket.socket:
    """Given a connected TCP socket, return it with Nagle's algorithm off and, on Linux, as a PromptSocket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not QUICKACK:
        return sock
    timeout = sock.gettimeout()
    prompt = PromptSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    prompt.settimeout(timeout)
    prompt.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
    return prompt


def _open_sftp(t: paramiko.Transport, timeout: float) -> paramiko.SFTPClient:
    """Given an authenticated transport and remote.timeout, open its SFTP session and return it. paramiko waits
    for the subsystem's reply and the server's version without a timeout: on a path gone silent then, the
    transport is closed after ``timeout`` (the wait then ends in an error: transient) instead of hanging."""
    t.channel_timeout = timeout  # opening the channel: paramiko's own is an hour
    watchdog = threading.Timer(timeout, t.close)
    watchdog.daemon = True
    watchdog.start()
    try:
        sftp = paramiko.SFTPClient.from_transport(t)
    finally:
        watchdog.cancel()
    if sftp is None or not t.is_active():
        raise paramiko.SSHException(f"no SFTP session within remote.timeout = {timeout:g} s")
    return sftp


def _check_host_key(
    key: paramiko.PKey, expected: dict[str, paramiko.PKey] | None, entry: str, cfg: RemoteConfig
) -> None:
    add = f"ssh-keyscan -p {cfg.port} {cfg.host} >> {cfg.known_hosts}"
    if not expected:
        raise PermanentRemoteError(
            f"host key of {entry} ({key.get_name()} {fingerprint(key)}) is not in remote.known_hosts = "
            f"{str(cfg.known_hosts)!r}; check the fingerprint with the ONSS, then add it: {add}"
        )
    known = expected.get(key.get_name())
    if known is None or known != key:
        was = ", ".join(f"{k.get_name()} {fingerprint(k)}" for k in expected.values())
        raise PermanentRemoteError(
            f"host key of {entry} CHANGED: the server shows {key.get_name()} {fingerprint(key)}, "
            f"remote.known_hosts = {str(cfg.known_hosts)!r} says {was}. This may be an attack; if the ONSS "
            f"announced a new key, replace the line for {entry} in that file"
        )


def _authenticate(t: paramiko.Transport, cfg: RemoteConfig, pkey: paramiko.PKey) -> None:
    """Given a transport past its key exchange, authenticate with the key: PermanentRemoteError when the server
    refuses it, TransientRemoteError when it never answered (paramiko says a connection lost or silent during
    the check with the same AuthenticationException as a refusal)."""
    t.auth_timeout = cfg.timeout  # paramiko's own is 30 s, whatever remote.timeout says
    started = time.monotonic()
    try:
        t.auth_publickey(cfg.username, pkey)
    except paramiko.AuthenticationException:
        if not t.is_active() or time.monotonic() - started >= cfg.timeout:  # no answer: no refusal either
            raise TransientRemoteError(
                f"SSH connection to {cfg.host}:{cfg.port} lost or silent (remote.timeout = {cfg.timeout:g} s)"
                " while its key was being checked"
            ) from None
        legacy = (
            " (remote.legacy_ssh_rsa is on: the server must accept ssh-rsa signatures)"
            if cfg.legacy_ssh_rsa and pkey.get_name() == "ssh-rsa"
            else ""
        )
        raise PermanentRemoteError(
            f"authentication refused for user {cfg.username!r} with key {cfg.private_key}: is its public key "
            f"registered for this technical user on the portal?{legacy}"
        ) from None
    if not t.is_authenticated():
        raise PermanentRemoteError(
            f"authentication incomplete for user {cfg.username!r}: the server asks for more than a key"
        )
