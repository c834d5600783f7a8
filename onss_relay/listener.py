"""What the daemon serves on [metrics] listen, put together: the Prometheus collector, /healthz, the status
page's routes and their guard (web.py serves them; the daemon only starts and stops it)."""

from __future__ import annotations

from collections.abc import Callable

from onss_relay.config import Config
from onss_relay.identity import days_left
from onss_relay.metrics import HealthSnapshot, RelayCollector, registry_for
from onss_relay.pipeline import Relay
from onss_relay.status_page.auth import guard_for
from onss_relay.status_page.routes import routes as page_routes
from onss_relay.views.sources import Sources
from onss_relay.web import WebServer, serve


def start_listener(cfg: Callable[[], Config], relay: Relay, snapshot: Callable[[], HealthSnapshot]) -> WebServer | None:
    """Given the configuration in force (a function: SIGHUP may change it), the relay and the daemon's health
    snapshot, serve /metrics, /healthz and the status page on metrics.listen; None when it is not set."""
    listen = cfg().metrics.listen
    if not listen:
        return None
    collector = RelayCollector(
        relay.journal, snapshot, lambda: days_left(relay.signer.identity()), lambda: cfg().poll, relay.spool
    )

    def health() -> tuple[bool, str]:
        snap = snapshot()
        return snap.healthy, snap.reason

    sources = Sources(relay.journal, relay.spool, lambda: cfg().poll, snapshot, collector.days_left)
    pages = page_routes(sources)  # the status page, behind the guard off loopback
    return serve(listen, registry_for(collector), health, pages, guard_for(cfg().metrics))
