"""The controller's own metrics, served on its plain-HTTP /metrics (a registry of its own).

`adapter.controller.reconcile` calls `decided` for every decision (and every problem that
stood in for one), `scaled_down` after a scale patch went through, `failed` for each Warning
and `observe_sync` once per sync; `adapter.controller.lease` flips `leader` through the
elector's `on_change`; the rebalancer counts its shed requests. `serve` starts the HTTP
endpoint in a thread (prometheus_client's own server: one GET path, no framework needed).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Instruments:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "pushscale_controller_decisions_total",
            "Decisions per HPA and sync, by reason (ScaleDown, ScaleDownHeld, NoScaleDown, or "
            "the problem that prevented one)",
            ["reason"], registry=self.registry,
        )  # fmt: skip
        self.scale_downs = Counter(
            "pushscale_controller_scale_downs_total",
            "Scale patches sent (not in dry run)",
            ["namespace", "hpa"], registry=self.registry,
        )  # fmt: skip
        self.last_decision = Gauge(
            "pushscale_controller_last_decision",
            "1 for the reason of the latest decision on each HPA",
            ["namespace", "hpa", "reason"], registry=self.registry,
        )  # fmt: skip
        self.decided_replicas = Gauge(
            "pushscale_controller_decided_replicas",
            "Replicas the latest decision on each HPA wants",
            ["namespace", "hpa"], registry=self.registry,
        )  # fmt: skip
        self.leader = Gauge(
            "pushscale_controller_leader",
            "1 while this controller holds the Lease and acts, else 0",
            registry=self.registry,
        )
        self.sync_seconds = Histogram(
            "pushscale_controller_sync_seconds",
            "Time of one sync over every managed HPA",
            buckets=_SECONDS, registry=self.registry,
        )  # fmt: skip
        self.shed_requests = Counter(
            "pushscale_controller_shed_requests_total",
            "Shed requests sent to push server workers, by result",
            ["result"], registry=self.registry,
        )  # fmt: skip
        self._reasons: dict[tuple[str, str], str] = {}

    def decided(self, namespace: str, hpa: str, reason: str, replicas: int | None) -> None:
        self.decisions.labels(reason).inc()
        previous = self._reasons.get((namespace, hpa))
        if previous is not None and previous != reason:
            self.last_decision.remove(namespace, hpa, previous)
        self._reasons[(namespace, hpa)] = reason
        self.last_decision.labels(namespace, hpa, reason).set(1)
        if replicas is not None:
            self.decided_replicas.labels(namespace, hpa).set(replicas)

    def scaled_down(self, namespace: str, hpa: str) -> None:
        self.scale_downs.labels(namespace, hpa).inc()

    def forget(self, namespace: str, hpa: str) -> None:
        """An HPA gone, or no longer annotated: its series go too."""
        reason = self._reasons.pop((namespace, hpa), None)
        if reason is not None:
            self.last_decision.remove(namespace, hpa, reason)
        for gauge in (self.decided_replicas, self.scale_downs):
            try:
                gauge.remove(namespace, hpa)
            except KeyError:
                pass

    def set_leader(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)

    def serve(self, port: int, address: str) -> tuple[WSGIServer, threading.Thread]:
        """/metrics over plain HTTP; `server.shutdown()` stops it. Raises OSError when the port
        cannot be bound."""
        return start_http_server(port, address, registry=self.registry)
