"""The controller's own metrics, served on its plain-HTTP /metrics (a registry of its own).

`adapter.controller.reconcile` calls `decided` for every decision (and every problem that
stood in for one), `scaled_down` after a scale patch went through, `failed` for each Warning
and `observe_sync` once per sync; `adapter.controller.lease` flips `leader` through the
elector's `on_change`; the rebalancer counts its shed requests. `serve` starts the HTTP
endpoint in a thread (prometheus_client's own server, no framework needed): `/metrics`, and
`/healthz` for the kubelet's liveness probe, which fails once the event loop stopped calling
`beat` (a hung or blocked loop: leader and standby alike beat every second).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

# A loop that has not beaten for this long is stuck: a sync that blocks it for longer than the
# kubelet's probe period times its failure threshold gets the container restarted.
STALE_SECONDS = 30.0

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Instruments:
    def __init__(self) -> None:
        self.last_beat = time.monotonic()
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

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def serve(self, port: int, address: str) -> tuple[WSGIServer, threading.Thread]:
        """/metrics and /healthz over plain HTTP; `server.shutdown()` stops it. Raises OSError
        when the port cannot be bound."""
        metrics = make_wsgi_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != "/healthz":
                body: Iterable[bytes] = metrics(environ, start_response)
                return body
            silent = time.monotonic() - self.last_beat
            healthy = silent < STALE_SECONDS
            status = "200 OK" if healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            text = "ok" if healthy else f"the event loop has not run for {silent:.0f} s"
            return [text.encode()]

        server = make_server(address, port, app, ThreadingWSGIServer, handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, name="controller-metrics")
        thread.daemon = True
        thread.start()
        return server, thread


class _Quiet(WSGIRequestHandler):
    """No access log line per scrape and probe."""

    def log_message(self, format: str, *args: object) -> None:
        pass
