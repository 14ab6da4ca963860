"""The Prometheus view of one worker: `/metrics` on `metrics_port + worker_index`.

`pushserver.worker` builds `worker_registry(stats, identity)`; `pushserver.routes` serves it.
Names and types follow the npm package socket.io-prometheus-metrics, so dashboards and alerts
written for the Node server keep working; the byte counters gain the `_total` suffix that the
exposition format requires of counters. `ACROSS_WORKERS` says how the adapter combines each
family over the workers of a pod (the `multiprocess_mode` idea of client_python).
"""

from __future__ import annotations

import enum
import os
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pushserver.stats import WorkerStats


class Combine(enum.Enum):
    SUM = "sum"
    MAX = "max"
    IGNORE = "ignore"


@dataclass(frozen=True)
class Family:
    """One exported family: what it is, how a pod's value is made from its workers', and
    where its value lives in `WorkerStats` (a number, or counts per `label` value)."""

    name: str
    kind: str  # "counter" or "gauge"
    help: str
    across_workers: Combine
    read: Callable[[WorkerStats], float | Mapping[Any, int]]
    # One label (counts keyed by its value) or several (keyed by tuples of values).
    label: str | tuple[str, ...] | None = None


FAMILIES = (
    Family("socket_io_connected", "gauge", "Number of currently connected sockets",
           Combine.SUM, lambda s: s.connected),
    Family("pushscale_engineio_sessions", "gauge",
           "Open engine.io sessions: connected sockets plus those not yet in a namespace",
           Combine.SUM, lambda s: s.engine_sessions),
    Family("pushscale_sockets", "gauge",
           "Open engine.io sessions by transport (websocket, polling) and engine.io version",
           Combine.SUM, lambda s: s.sockets, ("transport", "protocol")),
    Family("pushscale_handoffs_total", "counter",
           "Connections handed to the sibling worker owning their session, by result",
           Combine.SUM, lambda s: s.handoffs, "result"),
    Family("pushscale_http_connections", "gauge",
           "Open connections still speaking HTTP (not upgraded to a websocket), by port",
           Combine.SUM, lambda s: s.http_connections, "port"),
    Family("socket_io_connect_total", "counter", "Total count of socket.io connection requests",
           Combine.SUM, lambda s: s.connect_total),
    Family("socket_io_disconnect_total", "counter", "Total count of socket.io disconnections",
           Combine.SUM, lambda s: s.disconnect_total),
    Family("socket_io_events_received_total", "counter",
           "Total count of socket.io received events", Combine.SUM,
           lambda s: s.events_received, "event"),
    Family("socket_io_events_sent_total", "counter", "Total count of socket.io sent events",
           Combine.SUM, lambda s: s.events_sent, "event"),
    Family("socket_io_errors_total", "counter", "Total socket.io errors",
           Combine.SUM, lambda s: s.errors_total),
    Family("socket_io_receive_bytes_total", "counter",
           "Total socket.io bytes received (engine.io packets, heartbeats included)",
           Combine.SUM, lambda s: s.receive_bytes),
    Family("socket_io_transmit_bytes_total", "counter",
           "Total socket.io bytes transmitted (engine.io packets, heartbeats included)",
           Combine.SUM, lambda s: s.transmit_bytes),
    Family("pushscale_client_errors_total", "counter", "Bad input from clients, by what was wrong",
           Combine.SUM, lambda s: s.client_errors, "reason"),
    Family("pushscale_disconnects_total", "counter", "Socket disconnections by reason",
           Combine.SUM, lambda s: s.disconnects_by_reason, "reason"),
    Family("pushscale_connections_rejected_total", "counter",
           "Connections refused before the websocket upgrade, by reason",
           Combine.SUM, lambda s: s.rejected_connections, "reason"),
    Family("pushscale_sockets_shed_total", "counter",
           "Sockets this worker closed to move them elsewhere (drain and rebalancing)",
           Combine.SUM, lambda s: s.shed_total),
    Family("pushscale_publish_requests_total", "counter",
           "POST /publish requests by HTTP status code",
           Combine.SUM, lambda s: s.publishes, "code"),
    Family("pushscale_draining", "gauge", "1 while this worker drains, else 0",
           Combine.MAX, lambda s: int(s.draining)),
    Family("pushscale_redis_subscribed", "gauge",
           "1 while Redis holds this worker's subscription (it receives publishes), else 0",
           Combine.SUM, lambda s: int(s.redis_subscribed)),
    Family("pushscale_redis_subscription_losses_total", "counter",
           "Times this worker's Redis subscription failed (it subscribes again within 5 s)",
           Combine.SUM, lambda s: s.redis_subscription_losses),
    Family("pushscale_redis_messages_rejected_total", "counter",
           "Messages on the Redis channel dropped unread, by what was wrong with them",
           Combine.SUM, lambda s: s.redis_messages_rejected, "reason"),
)  # fmt: skip

# How a pod's value is made from its workers' values, for every family a worker serves.
ACROSS_WORKERS: dict[str, Combine] = {
    **{family.name: family.across_workers for family in FAMILIES},
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
        for family in FAMILIES:
            yield _metric(family, family.read(self._stats))
        info = GaugeMetricFamily(
            "pushscale_worker_info",
            "Identity of the worker serving this endpoint",
            labels=["pod", "worker", "version"],
        )
        info.add_metric([self._identity.pod, str(self._identity.worker), self._identity.version], 1)
        yield info


def _metric(family: Family, value: float | Mapping[Any, int]) -> Metric:
    cls = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
    if family.label is None:
        assert not isinstance(value, Mapping)
        return cls(family.name, family.help, value=value)
    assert isinstance(value, Mapping)
    several = isinstance(family.label, tuple)
    labels = list(family.label) if isinstance(family.label, tuple) else [family.label]
    metric = cls(family.name, family.help, labels=labels)
    for label_value, count in sorted(value.items()):
        metric.add_metric(list(label_value) if several else [label_value], count)
    return metric


class ProcessCollector(Collector):
    """prometheus_client's `process_*` families, minus its one O(connections) step.

    Its collector lists /proc/self/fd on every scrape for `process_open_fds`: about 1 ms per
    thousand sockets, so a scrape of a 10k-socket worker took ~10 ms. Here the list is taken
    by `refresh_open_fds`, which the worker calls every few seconds off the scrape path."""

    def __init__(self, proc: Path = Path("/proc/self")) -> None:
        self._proc = proc
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._pagesize = resource.getpagesize()
        self._boot_time = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        self._max_fds = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self._open_fds = 0.0
        self.refresh_open_fds()

    def refresh_open_fds(self) -> None:
        self._open_fds = float(len(os.listdir(self._proc / "fd")))
        self._max_fds = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])

    def collect(self) -> Iterable[Metric]:
        parts = (self._proc / "stat").read_bytes().rpartition(b")")[2].split()
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=float(parts[20])
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            value=float(parts[21]) * self._pagesize,
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=float(parts[19]) / self._ticks + self._boot_time,
        )
        yield CounterMetricFamily(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            value=(float(parts[11]) + float(parts[12])) / self._ticks,
        )
        yield GaugeMetricFamily(
            "process_open_fds",
            "Number of open file descriptors (counted every few seconds).",
            value=self._open_fds,
        )
        yield GaugeMetricFamily("process_max_fds", "Maximum number of open file descriptors.",
                                value=self._max_fds)  # fmt: skip


def worker_registry(
    stats: WorkerStats, identity: WorkerIdentity, process: ProcessCollector
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats, identity))
    registry.register(process)
    # The platform and GC collectors are process-wide singletons and cheap; registering the same
    # objects serves python_info and python_gc_* with no second implementation.
    for collector in (PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry
