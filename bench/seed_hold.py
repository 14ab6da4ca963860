"""The seed's autoscaling and pod-kill tests at its own scale: `bench.seed hold` (with `kill`).

4 pods x 4 workers (`--pods`, `--workers`) on their own addresses behind a Service
(`bench.cluster`), one Redis they share, and the real adapter serving the custom metrics API
over TLS from a static inventory of the pods. Load-generator agents (`pushscale.loadgen`, the
demo's viewers: socket.io over websocket, `joinByGameId`, and socket.io-client's reconnection
with the seed's options) each connect from their own source address to the Service.

1. hold: ramp to `--per-worker` sockets per worker at `--rate` a second; every second, each
   pod's kernel-counted connections (the truth) against what the adapter serves for it. Then the
   memory the sockets cost (PSS of the pods and of the agents, the kernel's TCP buffers) and the
   CPU of holding them idle (heartbeats only) over `--idle-seconds`.
2. kill (unless `--no-kill`): SIGKILL pod 0 whole. Its clients' transports close; each comes
   back after socket.io-client's backoff (10-20 s, randomization 1) through the Service, which
   routes only to pods whose /readyz answers. Until every client is connected again: reconnects
   a second, failed attempts, reconnect_failed, and whether the adapter serves the 3 survivors
   exactly and leaves the killed pod out.
3. game end: every client leaves at once; how long until the pods hold none and the adapter
   serves 0 for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapter.quantity import parse_quantity
from adapter.simulator.backoff import SEED_CLIENT
from bench.cluster import (
    SERVICE_IP,
    SERVICE_PORT,
    Cluster,
    Endpoints,
    Pod,
    Service,
    established,
    kernel_slab_bytes,
    server_counters,
    source_ip,
    up,
)
from bench.procfs import cpu_seconds, machine_busy_seconds, pss_bytes
from pushkit.progress import draw_bar, finish_bar
from pushscale.loadgen import LoadGenerator, LoadStatus, latency_percentile

NAMESPACE = "live"
# Sockets one agent holds at most: this machine allows 20000 open files per process.
PER_AGENT = 16000
# How long the Service's endpoints controller waits between two rounds of /readyz probes.
PROBE_SECONDS = 1.0
# A moment is quiet when no client connected or dropped for this long: the adapter's values
# are then at most one round old and must equal the truth.
QUIET_SECONDS = 3.0
QUIET_SAMPLES = 10
# The survivors' own account of the kill: why they closed sockets, what they refused.
SERVER_COUNTERS = ("pushscale_disconnects_total", "pushscale_connections_rejected_total")
# socket.io-client gives up after 10 attempts of at most 20 s each.
RECONNECT_DEADLINE_SECONDS = 240.0


@dataclass
class Sample:
    """One second of the run."""

    t: float
    phase: str
    clients: int  # viewers that think they are connected
    truth: dict[int, int]  # pod → ESTABLISHED connections on its client port
    served: dict[int, int]  # pod → the adapter's value (absent: not served)
    interval: float  # seconds since the previous sample; the counts below are over it
    connects: int
    reconnects: int
    failures: int
    drops: int
    pod_cores: float
    generator_cores: float  # the agents
    bench_cores: float  # this process and its `ss` (the sampling's own cost)
    adapter_cores: float
    machine_cores: float
    since_change: float = 0.0  # seconds since a client last connected or dropped
    cost: float = 0.0  # seconds this sample took to take
    unserved: str = ""  # the adapter's status and message when it served no pod

    def per_second(self, count: int) -> float:
        return count / self.interval if self.interval else 0.0

    def worst(self, pods: Sequence[int]) -> int:
        """max |served - truth| over `pods`; a pod not served counts as served 0."""
        return max((abs(self.served.get(p, 0) - self.truth.get(p, 0)) for p in pods), default=0)


@dataclass
class HoldResult:
    pods: int
    workers: int
    per_worker: int
    total: int
    rate: float
    agents: int
    samples: list[Sample] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "pods": self.pods, "workers": self.workers, "perWorker": self.per_worker,
            "total": self.total, "rate": self.rate, "agents": self.agents,
            "figures": self.figures, "samples": [asdict(s) for s in self.samples],
        }  # fmt: skip


def _cpu_by_pid(groups: dict[str, list[int]]) -> dict[int, float]:
    me = os.getpid()
    return {pid: cpu_seconds(pid, pid == me) for pids in groups.values() for pid in pids}


class CpuClock:
    """CPU cores each group of processes used between two readings.

    Per process, so a process that dies (the killed pod) drops out instead of taking its whole
    CPU time back out of the sum.
    """

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._at = time.monotonic()
        self._seconds = _cpu_by_pid(groups)
        self._machine = machine_busy_seconds()

    def cores(self, groups: dict[str, list[int]]) -> dict[str, float]:
        now, machine = time.monotonic(), machine_busy_seconds()
        wall = max(now - self._at, 1e-6)
        seconds = _cpu_by_pid(groups)
        used = {
            name: sum(max(0.0, seconds[pid] - self._seconds.get(pid, seconds[pid])) for pid in pids)
            / wall
            for name, pids in groups.items()
        }
        used["machine"] = (machine - self._machine) / wall
        self._at, self._seconds, self._machine = now, seconds, machine
        return used


class Run:
    """The running cluster and what the bench samples from it every second."""

    def __init__(
        self, pods: list[Pod], loadgen: LoadGenerator, adapter: httpx.AsyncClient,
        adapter_pid: int, samples: list[Sample],
    ) -> None:  # fmt: skip
        self.pods = pods
        self.loadgen = loadgen
        self.adapter = adapter
        self.adapter_pid = adapter_pid
        # Appended to as the run goes, so a result holds every sample even if the run fails.
        self.samples = samples
        self.started = time.monotonic()
        self.last_status: LoadStatus | None = None
        self.last_change = time.monotonic()
        self._cpu = CpuClock(self._groups())

    @property
    def generator_pids(self) -> list[int]:
        return [p.pid for p in self.loadgen.processes]

    def _groups(self) -> dict[str, list[int]]:
        return {
            "pods": [pid for pod in self.pods if pod.killed_at is None for pid in pod.pids],
            "generator": self.generator_pids,
            "bench": [os.getpid()],
            "adapter": [self.adapter_pid],
        }

    async def served(self) -> tuple[dict[int, int], str]:
        """The adapter's value per pod, as the HPA asks for it; or why it served none."""
        path = (
            f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NAMESPACE}/pods/*/"
            "socket_io_connected?labelSelector=app%3Dpush"
        )
        response = await self.adapter.get(path)
        if response.status_code != 200:
            # 404: no pod could be served (each left out for a reason the message gives); 503:
            # the adapter could not answer now. Either way the HPA keeps the replica count;
            # the bench records the answer rather than stopping.
            try:
                message = str(response.json().get("message", ""))
            except ValueError:
                message = response.text
            return {}, f"{response.status_code}: {message[:300]}"
        items = response.json()["items"]
        by_name = {pod.name: pod.index for pod in self.pods}
        return {
            by_name[item["describedObject"]["name"]]: int(parse_quantity(item["value"]))
            for item in items
        }, ""

    async def sample(self, phase: str) -> Sample:
        began = time.monotonic()
        status = await self.loadgen.status()
        truth = await asyncio.to_thread(established, [p for p in self.pods if p.killed_at is None])
        served, unserved = await self.served()
        cores = self._cpu.cores(self._groups())
        now = time.monotonic()
        previous = self.last_status or status
        delta = {
            name: getattr(status, name) - getattr(previous, name)
            for name in ("connects", "reconnects", "failures", "drops")
        }
        if self.last_status is None or delta["connects"] or delta["drops"]:
            self.last_change = now
        self.last_status = status
        last_t = self.samples[-1].t if self.samples else 0.0
        sample = Sample(
            t=now - self.started, phase=phase, clients=sum(status.connected.values()),
            truth=truth, served=served, interval=now - self.started - last_t, **delta,
            pod_cores=cores["pods"], generator_cores=cores["generator"],
            bench_cores=cores["bench"], adapter_cores=cores["adapter"],
            machine_cores=cores["machine"], since_change=now - self.last_change,
            cost=now - began, unserved=unserved,
        )  # fmt: skip
        self.samples.append(sample)
        return sample

    async def every_second(self, phase: str) -> Sample:
        """Sleep to the next whole second of the run, then sample."""
        elapsed = time.monotonic() - self.started
        await asyncio.sleep(math.ceil(elapsed + 0.01) - elapsed)
        return await self.sample(phase)

    def memory(self) -> dict[str, int]:
        return {
            "pods": sum(pss_bytes(pid) for pod in self.pods for pid in pod.pids),
            "generator": sum(pss_bytes(pid) for pid in self.generator_pids),
            "kernel": kernel_slab_bytes(),
        }

    async def quiet(self, phase: str, pods: Sequence[int]) -> list[Sample]:
        """`QUIET_SAMPLES` quiet samples (waiting up to a minute for quiet to start)."""
        quiet: list[Sample] = []
        deadline = time.monotonic() + 60 + QUIET_SAMPLES
        while len(quiet) < QUIET_SAMPLES and time.monotonic() < deadline:
            sample = await self.every_second(phase)
            if sample.since_change >= QUIET_SECONDS:
                quiet.append(sample)
        return quiet


async def _ramp(run: Run, total: int, rate: float) -> dict[str, Any]:
    alive = [pod.index for pod in run.pods]
    status0 = await run.loadgen.status()
    began = time.monotonic()
    await run.loadgen.set_target(total)
    ramp: list[Sample] = []
    while True:
        sample = await run.every_second("ramp")
        ramp.append(sample)
        draw_bar("hold: ramp", min(sample.clients, total), total)
        if sample.clients >= total and sum(sample.truth.values()) >= total:
            break
        if time.monotonic() - began > 3 * total / rate + 60:
            break  # the machine cannot keep up: the table will show how far it got
    finish_bar()
    ramp_seconds = time.monotonic() - began
    status = await run.loadgen.status()
    return {
        "rampSeconds": ramp_seconds,
        "rampConnected": ramp[-1].clients,
        "rampRate": (status.connects - status0.connects) / ramp_seconds,
        "rampFailures": status.failures - status0.failures,
        "rampConnectP50Ms": latency_percentile(status.latencies, 0.50) * 1000,
        "rampConnectP99Ms": latency_percentile(status.latencies, 0.99) * 1000,
        "rampWorstDiff": max(s.worst(alive) for s in ramp),
        "rampPodCores": _mean([s.pod_cores for s in ramp]),
        "rampGeneratorCores": _mean([s.generator_cores for s in ramp]),
        "rampBenchCores": _mean([s.bench_cores for s in ramp]),
        "rampMachineCores": _mean([s.machine_cores for s in ramp]),
    }


async def _kill(run: Run, endpoints: Endpoints, total: int) -> dict[str, Any]:
    victim = run.pods[0]
    survivors = [pod.index for pod in run.pods[1:]]
    before = await run.loadgen.status()
    held = (await run.sample("before kill")).truth.get(victim.index, 0)
    victim.kill()
    killed = victim.killed_at or time.monotonic()
    peak, back = 0, None
    storm: list[Sample] = []
    while time.monotonic() - killed < RECONNECT_DEADLINE_SECONDS:
        sample = await run.every_second("kill")
        storm.append(sample)
        peak = max(peak, round(sample.per_second(sample.reconnects)))
        draw_bar("kill: back", min(sample.clients, total), total)
        if sample.clients >= total and sum(sample.truth.values()) >= total:
            back = time.monotonic() - killed
            break
    finish_bar()
    after = await run.loadgen.status()
    removed = next((t for t, ready in endpoints.changes if t >= killed), None)
    quiet = await run.quiet("after kill", survivors)
    return {
        "killedHeld": held,
        "drops": after.drops - before.drops,
        "reconnects": after.reconnects - before.reconnects,
        "failedAttempts": after.failures - before.failures,
        "reconnectFailed": after.reconnect_failed - before.reconnect_failed,
        "lastError": after.last_error,
        "secondsUntilAllBack": back,
        "peakReconnectsPerSecond": peak,
        "secondsUntilServiceDroppedPod": None if removed is None else removed - killed,
        "afterKillQuietSamples": len(quiet),
        "afterKillQuietWorstDiff": max((s.worst(survivors) for s in quiet), default=None),
        "killedPodServed": any(victim.index in s.served for s in quiet),
        "unservedSecondsDuringKill": sum(s.interval for s in storm if s.unserved),
        "unservedWhy": next((s.unserved for s in storm if s.unserved), ""),
        "survivorsCounted": await asyncio.to_thread(server_counters, run.pods, SERVER_COUNTERS),
    }


async def wait_ready(endpoints: Endpoints | None, adapter: httpx.AsyncClient, pods: int) -> None:
    """Until the Service (if any) routes to every pod and the adapter has served a round."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            routed = len(endpoints.service.endpoints or ()) if endpoints else pods
            if routed == pods and (await adapter.get("/readyz")).status_code == 200:
                return
        await asyncio.sleep(0.2)
    raise SystemExit("the Service or the adapter was not ready after 60 s")


async def _game_end(run: Run) -> dict[str, Any]:
    """Every client leaves at once, as a game's viewers do at the final whistle."""
    began = time.monotonic()
    await run.loadgen.set_target(0)
    gone = served_zero = None
    while time.monotonic() - began < 120 and served_zero is None:
        sample = await run.every_second("game end")
        if gone is None and sum(sample.truth.values()) == 0:
            gone = time.monotonic() - began
        if gone is not None and not any(sample.served.values()):
            served_zero = time.monotonic() - began
    return {"gameEndSeconds": gone, "gameEndServedSeconds": served_zero}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


@contextlib.asynccontextmanager
async def viewers(
    cluster: Cluster, agents: int, rate: float, hosts: Sequence[str], port: int
) -> AsyncIterator[tuple[LoadGenerator, httpx.AsyncClient]]:
    """The agents, each from its own source address, and an HTTPS client of the adapter."""
    loadgen = await LoadGenerator.spawn(
        agents, [port], rate, SEED_CLIENT, cluster.run_dir, dict(os.environ),
        host=",".join(hosts), sources=[source_ip(i) for i in range(agents)],
    )  # fmt: skip
    verify = ssl.create_default_context(cafile=str(cluster.adapter_cert))
    try:
        async with httpx.AsyncClient(
            base_url=f"https://localhost:{cluster.adapter.port}", verify=verify, timeout=30
        ) as adapter:
            yield loadgen, adapter
    finally:
        await loadgen.stop(timeout=60)


async def _drive(
    cluster: Cluster, endpoints: Endpoints, result: HoldResult, idle_seconds: float, kill: bool
) -> None:
    pods = cluster.pods
    probing = asyncio.create_task(endpoints.run())
    try:
        async with viewers(cluster, result.agents, result.rate, [SERVICE_IP], SERVICE_PORT) as (
            loadgen,
            adapter,
        ):
            await wait_ready(endpoints, adapter, len(pods))
            run = Run(pods, loadgen, adapter, cluster.adapter.process.pid, result.samples)
            await run.sample("start")
            memory0 = run.memory()
            figures = result.figures
            figures.update(await _ramp(run, result.total, result.rate))
            quiet = await run.quiet("hold", [pod.index for pod in pods])
            figures["holdQuietSamples"] = len(quiet)
            figures["holdQuietWorstDiff"] = max(
                (s.worst([pod.index for pod in pods]) for s in quiet), default=None
            )
            held = quiet[-1].clients if quiet else 0
            idle: list[Sample] = []
            idle_started = time.monotonic()
            while time.monotonic() - idle_started < idle_seconds:
                idle.append(await run.every_second("idle"))
                draw_bar("hold: idle", len(idle), int(idle_seconds))
            finish_bar()
            memory = run.memory()
            figures["held"] = held
            for part in ("pods", "generator", "kernel"):
                grown = memory[part] - memory0[part]
                figures[f"{part}BytesPerConnection"] = grown / held if held else None
            figures["idlePodCores"] = _mean([s.pod_cores for s in idle])
            figures["idleGeneratorCores"] = _mean([s.generator_cores for s in idle])
            figures["idleBenchCores"] = _mean([s.bench_cores for s in idle])
            figures["idleAdapterCores"] = _mean([s.adapter_cores for s in idle])
            figures["idleMachineCores"] = _mean([s.machine_cores for s in idle])
            figures["perPodHeld"] = quiet[-1].truth if quiet else {}
            if kill:
                figures.update(await _kill(run, endpoints, result.total))
            figures.update(await _game_end(run))
    finally:
        probing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probing


def hold(
    pods_count: int, workers: int, per_worker: int, rate: float, idle_seconds: float,
    kill: bool, run_dir: Path,
) -> HoldResult:  # fmt: skip
    total = pods_count * workers * per_worker
    agents = math.ceil(total / PER_AGENT)
    result = HoldResult(pods_count, workers, per_worker, total, rate, agents)
    # After the kill the survivors hold all of it: a worker must neither shed nor refuse that.
    survivors = pods_count - 1 if kill and pods_count > 1 else pods_count
    after_kill = math.ceil(total / (survivors * workers))
    recommended = max(12500, math.ceil(after_kill * 1.08))
    extra = ["--recommended-connections", str(recommended),
             "--max-connections", str(max(15000, recommended + 500))]  # fmt: skip
    with up(pods_count, workers, extra, run_dir, NAMESPACE) as cluster:
        endpoints = Endpoints(Service(), cluster.pods, PROBE_SECONDS)
        asyncio.run(_drive(cluster, endpoints, result, idle_seconds, kill))
    return result
