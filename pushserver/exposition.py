"""The Prometheus view of one worker: `/metrics` on `metrics_port + worker_index`.

`pushserver.worker` builds `worker_registry(stats, identity)` and serves it with `metrics_app`.
Names and types follow the npm package socket.io-prometheus-metrics, so dashboards and alerts
written for the Node server keep working; the byte counters gain the `_total` suffix that the
exposition format requires of counters. `ACROSS_WORKERS` says how the adapter combines each
family over the workers of a pod (the `multiprocess_mode` idea of client_python).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    make_asgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pushserver.stats import WorkerStats


class Combine(enum.Enum):
    SUM = "sum"
    MAX = "max"
    IGNORE = "ignore"


# How a pod's value is made from its workers' values.
ACROSS_WORKERS: dict[str, Combine] = {
    "socket_io_connected": Combine.SUM,
    "socket_io_connect_total": Combine.SUM,
    "socket_io_disconnect_total": Combine.SUM,
    "socket_io_events_received_total": Combine.SUM,
    "socket_io_events_sent_total": Combine.SUM,
    "socket_io_errors_total": Combine.SUM,
    "socket_io_receive_bytes_total": Combine.SUM,
    "socket_io_transmit_bytes_total": Combine.SUM,
    "pushscale_client_errors_total": Combine.SUM,
    "pushscale_disconnects_total": Combine.SUM,
    "pushscale_connections_rejected_total": Combine.SUM,
    "pushscale_sockets_shed_total": Combine.SUM,
    "pushscale_publish_requests_total": Combine.SUM,
    "pushscale_draining": Combine.MAX,
    "pushscale_worker_info": Combine.IGNORE,
}


@dataclass(frozen=True)
class WorkerIdentity:
    pod: str
    worker: int
    version: str


class StatsCollector(Collector):
    def __init__(self, stats: WorkerStats, identity: WorkerIdentity) -> None:
        self._stats = stats
        self._identity = identity

    def collect(self) -> Iterable[Metric]:
        s = self._stats
        yield GaugeMetricFamily(
            "socket_io_connected", "Number of currently connected sockets", value=s.connected
        )
        yield CounterMetricFamily(
            "socket_io_connect_total",
            "Total count of socket.io connection requests",
            value=s.connect_total,
        )
        yield CounterMetricFamily(
            "socket_io_disconnect_total",
            "Total count of socket.io disconnections",
            value=s.disconnect_total,
        )
        yield _by_label(
            "socket_io_events_received_total",
            "Total count of socket.io received events",
            "event",
            s.events_received,
        )
        yield _by_label(
            "socket_io_events_sent_total",
            "Total count of socket.io sent events",
            "event",
            s.events_sent,
        )
        yield CounterMetricFamily(
            "socket_io_errors_total", "Total socket.io errors", value=s.errors_total
        )
        yield CounterMetricFamily(
            "socket_io_receive_bytes_total",
            "Total socket.io bytes received (engine.io packets, heartbeats included)",
            value=s.receive_bytes,
        )
        yield CounterMetricFamily(
            "socket_io_transmit_bytes_total",
            "Total socket.io bytes transmitted (engine.io packets, heartbeats included)",
            value=s.transmit_bytes,
        )
        yield _by_label(
            "pushscale_client_errors_total",
            "Bad input from clients, by what was wrong",
            "reason",
            s.client_errors,
        )
        yield _by_label(
            "pushscale_disconnects_total",
            "Socket disconnections by reason",
            "reason",
            s.disconnects_by_reason,
        )
        yield _by_label(
            "pushscale_connections_rejected_total",
            "Connections refused before the websocket upgrade, by reason",
            "reason",
            s.rejected_connections,
        )
        yield CounterMetricFamily(
            "pushscale_sockets_shed_total",
            "Sockets this worker closed to move them elsewhere (drain and rebalancing)",
            value=s.shed_total,
        )
        yield _by_label(
            "pushscale_publish_requests_total",
            "POST /publish requests by HTTP status code",
            "code",
            s.publishes,
        )
        yield GaugeMetricFamily(
            "pushscale_draining", "1 while this worker drains, else 0", value=int(s.draining)
        )
        info = GaugeMetricFamily(
            "pushscale_worker_info",
            "Identity of the worker serving this endpoint",
            labels=["pod", "worker", "version"],
        )
        info.add_metric([self._identity.pod, str(self._identity.worker), self._identity.version], 1)
        yield info


def _by_label(name: str, documentation: str, label: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def worker_registry(stats: WorkerStats, identity: WorkerIdentity) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats, identity))
    # The default collectors are process-wide singletons; registering the same objects on our
    # registry serves process_*, python_info and python_gc_* with no second implementation.
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def metrics_app(registry: CollectorRegistry) -> ASGIApp:
    """`/metrics` for Prometheus and the adapter; everything else is a 404."""
    exporter = make_asgi_app(registry)
    not_found = PlainTextResponse("not found: this port serves /metrics\n", status_code=404)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            await exporter(scope, receive, send)
        elif scope["type"] == "http":
            await not_found(scope, receive, send)

    return app
