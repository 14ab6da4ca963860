"""exposition: the worker's counters as Prometheus text, names as socket.io-prometheus-metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapter.samples import parse_samples
from pushserver.exposition import (
    ACROSS_WORKERS,
    Combine,
    ProcessCollector,
    WorkerIdentity,
    worker_registry,
)
from pushserver.stats import WorkerStats


def families(stats: WorkerStats) -> dict[str, Any]:
    text = generate_latest(
        worker_registry(stats, WorkerIdentity("push-a", 2, "9.9"), ProcessCollector())
    ).decode()
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


def test_sockets_by_transport_and_protocol():
    stats = WorkerStats()
    stats.sockets.update({("websocket", "4"): 5, ("polling", "3"): 2})
    stats.handoffs["ok"] += 3
    got = families(stats)
    assert got["pushscale_sockets"] == (
        "gauge",
        {
            (("protocol", "3"), ("transport", "polling")): 2,
            (("protocol", "4"), ("transport", "websocket")): 5,
        },
    )
    assert got["pushscale_handoffs"] == ("counter", {(("result", "ok"),): 3})
    # The adapter reads a sample with two labels like any other.
    text = generate_latest(
        worker_registry(stats, WorkerIdentity("push-a", 0, "9.9"), ProcessCollector())
    ).decode()
    assert parse_samples(text)["pushscale_sockets"][(("protocol", "3"), ("transport", "polling"))]


def test_every_family_declares_how_workers_combine():
    served = {
        name for name in families(WorkerStats()) if name.startswith(("socket_io_", "pushscale_"))
    }
    declared = {name.removesuffix("_total") for name in ACROSS_WORKERS}
    assert served == declared
    assert ACROSS_WORKERS["socket_io_connected"] is Combine.SUM


def test_process_families_and_the_fd_count_off_the_scrape_path(tmp_path):
    process = ProcessCollector()
    registry = worker_registry(WorkerStats(), WorkerIdentity("p", 0, "1"), process)

    def value(name: str) -> float:
        got = registry.get_sample_value(name)
        assert got is not None, name
        return got

    assert value("process_resident_memory_bytes") > 1_000_000
    assert value("process_cpu_seconds_total") > 0
    assert value("process_max_fds") >= 1024
    before = value("process_open_fds")
    files = [(tmp_path / str(i)).open("w") for i in range(50)]
    try:
        # A scrape does not list /proc/self/fd: the count moves only when refreshed.
        assert value("process_open_fds") == before
        process.refresh_open_fds()
        assert value("process_open_fds") == before + 50
    finally:
        for file in files:
            file.close()
