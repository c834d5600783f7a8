"""The HTTP listener ([metrics] listen): /metrics for Prometheus, /healthz for probes.

It knows nothing of the daemon: it is given a metrics registry and a function returning the health
snapshot, and serves them from a thread. A status page would be one more route here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from onss_relay.errors import ConfigError

TEXT = "text/plain; charset=utf-8"


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    health: Callable[[], tuple[bool, str]]


class _Handler(BaseHTTPRequestHandler):
    server: WebServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            ok, reason = self.server.health()
            self._send(200 if ok else 503, (reason + "\n").encode(), TEXT)
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", TEXT)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not worth a log line
        pass


def parse_listen(listen: str) -> tuple[str, int]:
    """Given "host:port" (or "[v6]:port", or ":port" for loopback), return (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(listen: str, registry: CollectorRegistry, health: Callable[[], tuple[bool, str]]) -> WebServer:
    """Given metrics.listen, a registry and a health function, serve /metrics and /healthz in a thread."""
    try:
        server = WebServer(parse_listen(listen), _Handler)
    except OSError as e:
        raise ConfigError(f"metrics.listen = {listen!r}: cannot listen there ({e.strerror or e})") from None
    server.registry = registry
    server.health = health
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    return server
