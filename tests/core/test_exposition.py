"""exposition: the worker's counters as Prometheus text, names as socket.io-prometheus-metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pushserver.exposition import ACROSS_WORKERS, Combine, WorkerIdentity, worker_registry
from pushserver.stats import WorkerStats


def families(stats: WorkerStats) -> dict[str, Any]:
    text = generate_latest(worker_registry(stats, WorkerIdentity("push-a", 2, "9.9"))).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        samples = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        out[family.name] = (family.type, samples)
    return out


def test_seed_names_and_types():
    stats = WorkerStats(connected=8285, connect_total=21958809, disconnect_total=21950529)
    stats.events_received.update({"joinByGameId": 3, "visibilityChange": 2})
    stats.client_error("bad_payload")
    got = families(stats)
    assert got["socket_io_connected"] == ("gauge", {(): 8285})
    assert got["socket_io_connect"] == ("counter", {(): 21958809})
    assert got["socket_io_disconnect"] == ("counter", {(): 21950529})
    assert got["socket_io_events_received"] == (
        "counter",
        {(("event", "joinByGameId"),): 3, (("event", "visibilityChange"),): 2},
    )
    assert got["socket_io_errors"] == ("counter", {(): 1})
    assert got["pushscale_client_errors"] == ("counter", {(("reason", "bad_payload"),): 1})
    assert got["pushscale_worker_info"][1] == {
        (("pod", "push-a"), ("version", "9.9"), ("worker", "2")): 1
    }
    assert "process_resident_memory_bytes" in got


def test_every_family_declares_how_workers_combine():
    served = {
        name for name in families(WorkerStats()) if name.startswith(("socket_io_", "pushscale_"))
    }
    declared = {name.removesuffix("_total") for name in ACROSS_WORKERS}
    assert served == declared
    assert ACROSS_WORKERS["socket_io_connected"] is Combine.SUM
