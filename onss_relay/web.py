"""The HTTP listener ([metrics] listen): /metrics for Prometheus, /healthz for probes, and the status page.

It knows nothing of the daemon: it is given a route table (path → function returning a Response) and a guard
deciding who may read the routes that are not open, and serves them from a thread. Read-only: GET and HEAD.
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from onss_relay.errors import ConfigError
from onss_relay.status_page.auth import Guard

log = structlog.get_logger(__name__)
TEXT = "text/plain; charset=utf-8"
# every answer: no script, no frame, nothing loaded from elsewhere; the page's stylesheet is its own route
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


@dataclasses.dataclass(frozen=True)
class Request:
    """A GET request: its path without the query, the rest of the path after the route's own, the query."""

    path: str
    rest: str
    query: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Route:
    """One page: the function answering it, and whether it is open to anyone (probes and Prometheus)."""

    answer: Callable[[Request], Response]
    open: bool = False


class WebServer(ThreadingHTTPServer):
    daemon_threads = True
    routes: Mapping[str, Route]
    guard: Guard

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-answer (a browser closing the page) is nothing to say; anything else
        is one log line, never a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            return
        log.warning("web_request_failed", client=str(client_address), error=f"{type(error).__name__}: {error}")


class WebServer6(WebServer):
    """The listener on an IPv6 address ("[::1]:9464", "[::]:9464")."""

    address_family = socket.AF_INET6


def find_route(routes: Mapping[str, Route], path: str) -> tuple[Route, str] | None:
    """Given the route table and a request path, return the route for it and the rest of the path: an exact
    route ("/metrics"), else the route of its first segment ("/set" for "/set/GO…")."""
    if path in routes:
        return routes[path], ""
    first, _, rest = path.lstrip("/").partition("/")
    route = routes.get("/" + first)
    return (route, urllib.parse.unquote(rest)) if route is not None and rest else None


class _Handler(BaseHTTPRequestHandler):
    server: WebServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send(self._safe_answer())

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(dataclasses.replace(self._safe_answer(), body=b""), head=True)

    def _safe_answer(self) -> Response:
        """Answer the request; a page that fails (a journal locked too long) is a 500 with one line, logged."""
        try:
            return self._answer()
        except Exception as e:
            log.warning("page_failed", path=urllib.parse.urlsplit(self.path).path, error=f"{type(e).__name__}: {e}")
            return Response(500, b"this page failed; the relay's log says why\n")

    def _answer(self) -> Response:
        url = urllib.parse.urlsplit(self.path)
        found = find_route(self.server.routes, url.path)
        if found is None:
            return Response(404, b"not found: try /, /metrics or /healthz\n")
        route, rest = found
        guard = self.server.guard
        if not route.open and not guard.allows(self.headers.get("Authorization")):
            return Response(401, b"authentication required\n", headers=(("WWW-Authenticate", guard.challenge()),))
        query = dict(urllib.parse.parse_qsl(url.query))
        return route.answer(Request(url.path, rest, query))

    def _send(self, r: Response, head: bool = False) -> None:
        self.send_response(r.status)
        self.send_header("Content-Type", r.content_type)
        for name, value in (*SECURITY_HEADERS, *r.headers):
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(r.body)))
        self.end_headers()
        if not head:
            self.wfile.write(r.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not worth a log line
        pass


def parse_listen(listen: str) -> tuple[str, int]:
    """Given "host:port" (or "[v6]:port", or ":port" for loopback), return (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def probe_routes(registry: CollectorRegistry, health: Callable[[], tuple[bool, str]]) -> dict[str, Route]:
    """Given a metrics registry and a health function, return the open routes /metrics and /healthz."""

    def metrics(_: Request) -> Response:
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    def healthz(_: Request) -> Response:
        ok, reason = health()
        return Response(200 if ok else 503, (reason + "\n").encode())

    return {"/metrics": Route(metrics, open=True), "/healthz": Route(healthz, open=True)}


def serve(
    listen: str,
    registry: CollectorRegistry,
    health: Callable[[], tuple[bool, str]],
    pages: Mapping[str, Route] | None = None,
    guard: Guard | None = None,
) -> WebServer:
    """Given metrics.listen, a registry, a health function, the status page's routes and their guard, serve
    them all in a thread and return the server."""
    host, port = parse_listen(listen)
    try:
        server = (WebServer6 if ":" in host else WebServer)((host, port), _Handler)
    except OSError as e:
        raise ConfigError(f"metrics.listen = {listen!r}: cannot listen there ({e.strerror or e})") from None
    server.routes = {**(pages or {}), **probe_routes(registry, health)}
    server.guard = guard or Guard("", None, None)
    threading.Thread(target=server.serve_forever, name="web", daemon=True).start()
    return server
