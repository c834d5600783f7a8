"""Prometheus /metrics and /healthz on [metrics] listen: gauges read from the journal at scrape time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from onss_relay import signing
from onss_relay.config import Config
from onss_relay.journal import IN_FLIGHT, State
from onss_relay.relay import Relay

if TYPE_CHECKING:
    from onss_relay.daemon import Daemon


class RelayCollector(Collector):
    """Given the relay and the daemon, describe the queue, states, failures, polls and certificate."""

    def __init__(self, cfg: Config, relay: Relay, daemon: Daemon) -> None:
        self.cfg = cfg
        self.relay = relay
        self.daemon = daemon

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        counts = self.relay.journal.counts()
        depth = GaugeMetricFamily("onss_relay_queue_depth", "Declaration sets claimed but not yet sent")
        depth.add_metric([], sum(counts.get(s, 0) for s in IN_FLIGHT))
        yield depth
        oldest = self.relay.journal.sets_in(*IN_FLIGHT, limit=1)
        age = GaugeMetricFamily("onss_relay_oldest_unsent_seconds", "Age of the oldest set not yet sent")
        age.add_metric([], time.time() - oldest[0].created_at if oldest else 0.0)
        yield age
        by_state = GaugeMetricFamily("onss_relay_sets", "Declaration sets by state", labels=["state"])
        for s in State:
            by_state.add_metric([s.value], counts.get(s, 0))
        yield by_state
        failures = CounterMetricFamily("onss_relay_stage_failures", "Failed runs per stage", labels=["stage"])
        for stage in self.daemon.stages:
            failures.add_metric([stage.health.name], stage.health.failures)
        yield failures
        poll = next((s.health for s in self.daemon.stages if s.health.name == "poll"), None)
        last = GaugeMetricFamily("onss_relay_last_successful_poll_timestamp_seconds", "Unix time of the last good poll")
        last.add_metric([], poll.last_ok if poll and poll.last_ok else 0.0)
        yield last
        days = GaugeMetricFamily("onss_relay_certificate_days_left", "Days until the signing certificate expires")
        try:
            days.add_metric([], signing.days_left(self.relay.signer.identity()))
        except Exception:  # an unreadable certificate shows as -1; check explains why
            days.add_metric([], -1)
        yield days
        healthy = GaugeMetricFamily("onss_relay_healthy", "1 when every stage runs and polls succeed")
        healthy.add_metric([], 1.0 if self.daemon.health()[0] else 0.0)
        yield healthy


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    daemon: Daemon


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            ok, reason = self.server.daemon.health()
            self._send(200 if ok else 503, (reason + "\n").encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - scrapes are not worth a log line
        pass


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve_metrics(cfg: Config, relay: Relay, daemon: Daemon) -> _Server:
    """Given the configuration, the relay and the daemon, serve /metrics and /healthz in a thread."""
    registry = CollectorRegistry()
    registry.register(RelayCollector(cfg, relay, daemon))
    server = _Server(parse_listen(cfg.metrics.listen), _Handler)
    server.registry = registry
    server.daemon = daemon
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
