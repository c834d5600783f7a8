"""Transports: one interface (base.Transport), one module per protocol."""

from __future__ import annotations

from pathlib import Path

from onss_relay.config import Config
from onss_relay.transport.base import Transport


def open_transport(cfg: Config) -> Transport:
    """Given the configuration, return a connected transport for remote.transport."""
    kind = cfg.remote.transport
    if kind == "local":
        from onss_relay.transport.local import LocalTransport

        base = Path(cfg.remote.base_dir)
        if not base.is_absolute() and cfg.source is not None:
            base = cfg.source.parent.absolute() / base
        return LocalTransport(base)
    if kind == "sftp":
        from onss_relay.transport.sftp import SftpTransport

        return SftpTransport.connect(cfg.remote)
    from onss_relay.transport.ftp import FtpTransport

    return FtpTransport.connect(cfg.remote)
