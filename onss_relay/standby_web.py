"""What a standby serves on [metrics] listen while it waits for the relay lock: /metrics with the leadership
gauges (not the leader, standby since when, the active relay's epoch), /healthz saying "standby", and a page
saying so. The journal's figures and the status page stay with the active relay (one source for Prometheus)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from onss_relay.config import MetricsConfig
from onss_relay.errors import ConfigError
from onss_relay.leadership import RelayLock
from onss_relay.metrics import leadership_metrics
from onss_relay.status_page.auth import guard_for
from onss_relay.web import Request, Response, Route, WebServer, serve

log = structlog.get_logger(__name__)


def standby_health(lock: RelayLock) -> tuple[bool, str]:
    """Given the relay lock this relay waits for, return (healthy, reason): healthy as a standby while it can
    see who leads; not healthy while the journal's database cannot be reached (it could not take over)."""
    if unreachable := lock.unreachable:
        return False, f"standby: the journal's database cannot be reached ({unreachable}); no take-over possible"
    doc = lock.describe()
    epoch = doc.get("leader_epoch")
    holder = lock.holder()
    if holder.isdigit():  # the spool's flock names a pid: the active relay runs on this very host
        holder = f"{socket.gethostname()} pid {holder}"
    return True, f"standby: active relay {holder}{f', epoch {epoch}' if epoch else ''}; taking over when it stops"


class StandbyCollector(Collector):
    """Given the relay lock, describe a standby: healthy as a standby, not the leader, since when it waits."""

    def __init__(self, lock: RelayLock) -> None:
        self.lock = lock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        healthy = GaugeMetricFamily("onss_relay_healthy", "1 when every stage runs and polls succeed")
        healthy.add_metric([], 1.0 if standby_health(self.lock)[0] else 0.0)
        yield healthy
        yield from leadership_metrics(self.lock.describe())


def serve_standby(metrics: MetricsConfig, lock: RelayLock) -> WebServer | None:
    """Given the [metrics] settings and the relay lock, serve /metrics, /healthz and a "standby" page on
    metrics.listen while this relay waits; None when it is not set or cannot listen there (on one machine the
    active relay may hold that address: said once, the relay waits all the same)."""
    if not metrics.listen:
        return None
    registry = CollectorRegistry()
    registry.register(StandbyCollector(lock))

    def page(_: Request) -> Response:
        return Response(200, (standby_health(lock)[1] + "\n").encode())

    try:
        return serve(metrics.listen, registry, lambda: standby_health(lock), {"/": Route(page)}, guard_for(metrics))
    except ConfigError as e:
        log.warning("standby_not_serving", error=str(e), detail="/metrics and /healthz start with the leadership")
        return None


def stop_serving(server: WebServer | None) -> None:
    """Given a listener (or None), stop it and free its address for the next one."""
    if server is not None:
        server.shutdown()
        server.server_close()
