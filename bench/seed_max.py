"""The seed's maximum-connections test on one machine: `bench.seed max`.

`--pods` pods x `--workers` workers, each worker allowed `--per-worker` sockets (just under the
20000 open files a process may hold here), and viewers connecting straight to the pods' own
addresses (no Service: its conntrack entries would be a limit of the bench, not of the server)
at `--rate` a second. The ramp stops at the first error — a failed connect, or a connected
client dropped (a missed heartbeat) — or when the machine's available memory falls under
`RESERVE_BYTES`, or when every worker is full, or after `--minutes`; the result says which.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.cluster import CLIENT_PORT, Cluster, up
from bench.procfs import meminfo_bytes
from bench.seed_hold import NAMESPACE, PER_AGENT, Run, Sample, viewers, wait_ready
from pushkit.progress import draw_bar, finish_bar

# Stop before the machine itself is in danger: the OOM killer would pick a process at random.
RESERVE_BYTES = 2 * 1024**3


@dataclass
class MaxResult:
    pods: int
    workers: int
    per_worker: int
    rate: float
    minutes: float
    held: int = 0
    stopped_by: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)


async def _ramp(cluster: Cluster, result: MaxResult, agents: int) -> None:
    capacity = result.pods * result.workers * result.per_worker
    hosts = [pod.ip for pod in cluster.pods]
    async with viewers(cluster, agents, result.rate, hosts, CLIENT_PORT) as (loadgen, adapter):
        await wait_ready(None, adapter, result.pods)
        run = Run(cluster.pods, loadgen, adapter, cluster.adapter.process.pid, result.samples)
        await run.sample("start")
        memory0 = run.memory()
        began = time.monotonic()
        await loadgen.set_target(capacity)
        last_clean: Sample | None = None
        while True:
            sample = await run.every_second("max")
            draw_bar("max: ramp", min(sample.clients, capacity), capacity)
            status = run.last_status
            assert status is not None
            if status.failures or status.drops:
                what = "a failed connect" if status.failures else "a connected client dropped"
                result.stopped_by = f"the first error: {what} ({status.last_error})"
                break
            last_clean = sample
            if sample.clients >= capacity:
                result.stopped_by = (
                    f"every worker full: {result.per_worker} a worker (--per-worker, set by the "
                    "20000 open files a process may hold)"
                )
                break
            if meminfo_bytes("MemAvailable") < RESERVE_BYTES:
                result.stopped_by = f"memory: under {RESERVE_BYTES // 1024**3} GiB available"
                break
            if time.monotonic() - began > result.minutes * 60:
                result.stopped_by = f"the time budget (--minutes {result.minutes:g}), no limit hit"
                break
        finish_bar()
        await loadgen.freeze()  # no more connects: what is held now is the answer
        memory = run.memory()
        result.held = last_clean.clients if last_clean else 0
        per_worker = await asyncio.to_thread(_per_worker, cluster)
        held_now = sum(per_worker)
        result.figures = {
            "rampSeconds": time.monotonic() - began,
            "heldAtFirstError": result.held,
            "serverCountAtEnd": held_now,
            "perWorkerMax": max(per_worker, default=0),
            "perWorkerMin": min(per_worker, default=0),
            "podsBytesPerConnection": (memory["pods"] - memory0["pods"]) / max(held_now, 1),
            "generatorBytesPerConnection": (memory["generator"] - memory0["generator"])
            / max(held_now, 1),
            "kernelBytesPerConnection": (memory["kernel"] - memory0["kernel"]) / max(held_now, 1),
            "availableMemoryBytesAtEnd": meminfo_bytes("MemAvailable"),
            "lastPodCores": sample.pod_cores,
            "lastGeneratorCores": sample.generator_cores,
            "lastMachineCores": sample.machine_cores,
            "failures": status.failures,
            "drops": status.drops,
            "lastError": status.last_error,
        }


def _per_worker(cluster: Cluster) -> list[int]:
    counts = []
    with httpx.Client(timeout=30) as http:
        for pod in cluster.pods:
            for worker in range(pod.workers):
                text = http.get(pod.metrics_url(worker)).text
                line = next(x for x in text.splitlines() if x.startswith("socket_io_connected "))
                counts.append(int(float(line.split()[1])))
    return counts


def max_connections(
    pods: int, workers: int, per_worker: int, rate: float, minutes: float, run_dir: Path
) -> MaxResult:
    result = MaxResult(pods, workers, per_worker, rate, minutes)
    agents = math.ceil(pods * workers * per_worker / PER_AGENT)
    extra = [
        "--max-connections", str(per_worker), "--recommended-connections", str(per_worker),
        # Fewer not-yet-websocket connections, so the sockets may have the open files.
        "--max-http-connections", "512",
    ]  # fmt: skip
    with up(pods, workers, extra, run_dir, NAMESPACE) as cluster:
        asyncio.run(_ramp(cluster, result, agents))
    return result
