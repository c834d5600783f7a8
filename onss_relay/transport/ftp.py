"""FTP and explicit FTPS (ftplib) to the transfer point: passive, binary, password from a file.

Certificate verification is on for FTPS (system CAs, or remote.ca_file). Listings use MLSD where the server
has it, else NLST + SIZE. 4xx replies and lost connections are transient; 5xx and certificate problems
are permanent.
"""

from __future__ import annotations

import builtins
import contextlib
import ftplib
import io
import posixpath
import ssl
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO, TypeVar

import structlog

from onss_relay.config import RemoteConfig, read_secret
from onss_relay.errors import PermanentRemoteError, RemoteError, RemoteFileGone, TransientRemoteError
from onss_relay.transport.base import (
    COPY_CHUNK,
    RemoteEntry,
    SizeLimitExceeded,
    Upload,
    abort_socket,
    check_folder,
    check_remote_name,
    run_uploads_sequentially,
)
from onss_relay.transport.batch import Fetch, delete_each, get_each

log = structlog.get_logger(__name__)

T = TypeVar("T")
NETWORK_ERRORS = (OSError, EOFError, ftplib.error_temp, ftplib.error_proto, ftplib.error_reply)
MLSD_KINDS = {"file": "file", "dir": "dir", "cdir": "dir", "pdir": "dir"}


def _classify(e: BaseException, what: str) -> RemoteError:
    if isinstance(e, RemoteError):
        return e
    if isinstance(e, ssl.SSLCertVerificationError):
        return PermanentRemoteError(
            f"{what}: the FTPS server certificate does not verify ({e.verify_message}); "
            "set remote.ca_file to the CA that signed it"
        )
    if isinstance(e, ftplib.error_perm):
        code = str(e)[:3]
        if code == "530":
            return PermanentRemoteError(
                f"{what}: login refused ({e}); check remote.username and remote.password_file"
            ).as_answer()
        return PermanentRemoteError(f"{what}: the server refused: {e}").as_answer()
    error = TransientRemoteError(f"{what}: {e or type(e).__name__}")
    return error.as_answer() if isinstance(e, ftplib.Error) else error  # a reply (421 …), or no reply at all


class FtpTransport:
    """One FTP(S) control connection, rooted at remote.base_dir."""

    delivers_late = True  # a STOR held by a stalled path still opens (truncates) its file when it arrives

    def __init__(self, ftp: ftplib.FTP, base_dir: str, has_mlsd: bool) -> None:
        self._ftp = ftp
        self.base_dir = base_dir
        self.has_mlsd = has_mlsd

    @classmethod
    def connect(cls, cfg: RemoteConfig) -> FtpTransport:
        """Given the remote configuration, connect, (for ftps: verify and encrypt), log in, go binary."""
        password = (read_secret(cfg.password_file, "remote.password_file") or b"").decode()
        ftp: ftplib.FTP
        if cfg.transport == "ftps":
            context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
            ftp = ftplib.FTP_TLS(context=context, timeout=cfg.timeout)
        else:
            ftp = ftplib.FTP(timeout=cfg.timeout)
        what = f"{cfg.transport} {cfg.host}:{cfg.port}"
        try:
            ftp.connect(cfg.host, cfg.port, timeout=cfg.timeout)
            ftp.login(cfg.username, password)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(True)
            ftp.voidcmd("TYPE I")
            features = _features(ftp)
        except (ftplib.error_perm, ssl.SSLError, *NETWORK_ERRORS) as e:
            with contextlib.suppress(Exception):
                ftp.close()
            raise _classify(e, what) from None
        return cls(ftp, cfg.base_dir, "MLST" in features.upper())  # RFC 3659: MLST comes with MLSD

    def _path(self, folder: str, name: str | None = None) -> str:
        base = posixpath.join(self.base_dir, check_folder(folder))
        return base if name is None else posixpath.join(base, check_remote_name(name))

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ftplib.error_perm, ssl.SSLError, *NETWORK_ERRORS) as e:
            raise _classify(e, what) from None

    def list(self, folder: str) -> builtins.list[RemoteEntry]:
        path = self._path(folder)
        try:
            return self._list(folder, path)
        finally:
            self._call(f"listing {folder}", lambda: self._ftp.voidcmd("TYPE I"))  # listings switch to ASCII

    def scan(self, folder: str) -> Iterator[RemoteEntry]:
        """MLSD read line by line from its data connection (ftplib's mlsd holds it whole); a server without
        MLSD is listed by NLST + SIZE, which holds the names (the SIZE commands need the control connection)."""
        if not self.has_mlsd:
            yield from self.list(folder)
            return
        what = f"listing {folder}"
        try:
            for line in self._mlsd_lines(self._path(folder)):
                facts, _, name = line.partition(" ")
                f = dict(fact.partition("=")[::2] for fact in facts.lower().rstrip(";").split(";"))
                if f.get("type") not in ("cdir", "pdir"):
                    yield RemoteEntry(name, int(f.get("size", 0) or 0), MLSD_KINDS.get(f.get("type", ""), "other"))
        except (ftplib.error_perm, ssl.SSLError, ValueError, *NETWORK_ERRORS) as e:
            raise _classify(e, what) from None
        finally:
            self._call(what, lambda: self._ftp.voidcmd("TYPE I"))  # listings switch to ASCII

    def _mlsd_lines(self, path: str) -> Iterator[str]:
        """Given a folder path, send MLSD and yield the lines of its answer as they arrive (ftplib.retrlines, one
        line at a time), then read the closing reply."""
        self._ftp.sendcmd("OPTS MLST type;size;")
        self._ftp.sendcmd("TYPE A")
        with self._ftp.transfercmd(f"MLSD {path}") as conn, conn.makefile("r", encoding=self._ftp.encoding) as fp:
            while line := fp.readline(self._ftp.maxline + 1):
                if len(line) > self._ftp.maxline:
                    raise ftplib.error_proto(f"a listing line longer than {self._ftp.maxline} bytes")
                yield line.rstrip("\r\n")
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
        self._ftp.voidresp()

    def _list(self, folder: str, path: str) -> builtins.list[RemoteEntry]:
        if self.has_mlsd:
            facts = self._call(f"listing {folder}", lambda: list(self._ftp.mlsd(path, ["type", "size"])))
            out = [
                RemoteEntry(name, int(f.get("size", 0) or 0), MLSD_KINDS.get(f.get("type", ""), "other"))
                for name, f in facts
                if f.get("type") not in ("cdir", "pdir")
            ]
        else:
            names = self._call(f"listing {folder}", lambda: self._ftp.nlst(path))
            out = []
            for full in names:
                name = posixpath.basename(full)
                size = self._size_of(posixpath.join(path, name))
                out.append(RemoteEntry(name, size or 0, "file" if size is not None else "other"))
        return sorted(out, key=lambda e: e.name)

    def put(self, src: BinaryIO, folder: str, name: str) -> None:
        self._store(src, folder, name)

    def put_bytes(self, data: bytes, folder: str, name: str) -> None:
        self._store(io.BytesIO(data), folder, name)

    def _store(self, f: BinaryIO, folder: str, name: str) -> None:
        path = self._path(folder, name)
        self._call(f"uploading {folder}/{name}", lambda: self._ftp.storbinary(f"STOR {path}", f, COPY_CHUNK))

    def get(self, folder: str, name: str, dest: BinaryIO, max_size: int) -> int:
        path = self._path(folder, name)
        announced = self._size_of(path)
        if announced is None:  # 550: gone since it was listed (or never a file: listings keep only files)
            raise RemoteFileGone(f"{folder}/{name}: no such remote file (gone since it was listed?)")
        if announced > max_size:
            raise SizeLimitExceeded(
                f"{folder}/{name} is larger than poll.max_size ({max_size} bytes); left on the server"
            )
        received = [0]

        def write(chunk: bytes) -> None:
            received[0] += len(chunk)
            if received[0] > max_size:  # the server announced less than it sends
                raise SizeLimitExceeded(f"{folder}/{name} is larger than poll.max_size ({max_size} bytes)")
            dest.write(chunk)

        try:
            self._call(f"downloading {folder}/{name}", lambda: self._ftp.retrbinary(f"RETR {path}", write, COPY_CHUNK))
        except SizeLimitExceeded:
            self.close()  # the transfer was cut mid-way: this control connection is not reusable
            raise
        except PermanentRemoteError as e:
            if received[0] == 0 and self._size_of(path) is None:  # taken between SIZE and RETR (the poller)
                raise RemoteFileGone(f"{folder}/{name}: no such remote file (gone since it was listed?)") from e
            raise
        return received[0]

    def delete(self, folder: str, name: str) -> None:
        path = self._path(folder, name)
        try:
            self._ftp.delete(path)
        except ftplib.error_perm as e:
            if self._size_of(path) is None:
                return  # gone already
            raise _classify(e, f"deleting {folder}/{name}") from None
        except NETWORK_ERRORS as e:
            raise _classify(e, f"deleting {folder}/{name}") from None

    def _size_of(self, path: str) -> int | None:
        try:
            size = self._ftp.size(path)
        except ftplib.error_perm:
            return None  # 550: no such (regular) file
        except (ssl.SSLError, *NETWORK_ERRORS) as e:
            raise _classify(e, f"checking {path}") from None
        return int(size) if size is not None else None

    def get_many(self, folder: str, fetches: Sequence[Fetch], max_size: int) -> None:
        get_each(self, folder, fetches, max_size)

    def delete_many(self, folder: str, names: Sequence[str]) -> None:
        delete_each(self, folder, names)

    def size(self, folder: str, name: str) -> int | None:
        return self._size_of(self._path(folder, name))

    def exists(self, folder: str, name: str) -> bool:
        return self.size(folder, name) is not None

    def alive(self, ask: bool = True) -> bool:
        """Given a connection kept idle, True when the server answers a NOOP (without ``ask``: still open)."""
        if self._ftp.sock is None or not ask:
            return self._ftp.sock is not None
        try:
            self._ftp.voidcmd("NOOP")
        except (OSError, EOFError, ftplib.Error):
            return False
        return True

    def prepare_uploads(self) -> None:
        pass

    def run_uploads(self, uploads: Iterator[Upload | None], window: int = 1) -> None:
        run_uploads_sequentially(self, uploads)  # FTP has one transfer per connection: no pipelining

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ftp.quit()
        with contextlib.suppress(Exception):
            self._ftp.close()

    def abort(self) -> None:
        """Reset the control connection (SO_LINGER 0), without a QUIT: nothing still queued is sent."""
        abort_socket(self._ftp.sock)
        with contextlib.suppress(Exception):
            self._ftp.close()


def _features(ftp: ftplib.FTP) -> str:
    try:
        return ftp.sendcmd("FEAT")
    except ftplib.error_perm:
        return ""  # an old server without FEAT: NLST + SIZE it is
