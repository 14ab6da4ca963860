"""The adapter's scrape rounds, API latency, CPU and value age for 10 to 4000 workers.

    .venv/bin/python -m bench.adapter [--sizes 10,100,400] [--requests 500] [--seconds 10]
        [--cpus 2]

One endpoint process (plain asyncio protocols on uvloop) listens on a block
of consecutive ports, each a push server worker: its `/metrics` body is a busy worker's
exposition built by `pushserver.exposition` (~6 KB, 45 samples, labelled counters included),
so the adapter parses what it would parse in a cluster. Like a worker's prometheus_client
exposition, an endpoint honours `name[]=` (the adapter asks for the families it reads); each
answer is made once per query, since real workers write theirs on other machines. Endpoint k
belongs to pod k // 4 as worker k % 4: pods of 4 workers on consecutive ports, as
`--metrics-port` lays them out; a size that is not a multiple of 4 ends with a smaller pod
(10 = 4 + 4 + 2).

For each size, the real `pushscale adapter` (default intervals: a round every 0.5 s, values
at most 2 s old) serves those pods from `--static-pods` over self-signed TLS. Where each
process runs (`PLACEMENTS`): with `--cpus 2`, as the manifest sizes an adapter over 1000 pods,
the serving process on CPU 0 and the scrape process on CPU 1, the endpoints on CPU 0 at nice
19 and this client on CPU 0; with `--cpus 1`, both adapter processes on CPU 0, the endpoints
(nice 10) and this client on CPU 1.

1. quiet, `--seconds`: the adapter's CPU (/proc) over the rounds it finished (its own
   `pushscale_adapter_scrape_round_seconds` count), i.e. CPU per round, for the serving process
   and for its scrape process (`adapter.scrapeproc`) apart;
2. API, `--seconds`: `--requests` sequential keep-alive HTTPS requests for
   `pods/*/socket_io_connected`, the HPA's request, spread evenly so they meet every phase of
   the round cycle. The rounds' durations and the value age are the adapter's own
   histograms over this phase (`pushscale_adapter_scrape_round_seconds`,
   `pushscale_adapter_value_age_seconds`; the API's timestamps are whole seconds). Nothing
   else is asked meanwhile: `/debug/pods` over 1000 pods holds the serving loop ~35 ms;
3. fresh: a request that finds no fresh round waits for one. The running adapter never gets
   there (it scrapes every second), so this runs the adapter's own app in-process with
   `max_age_seconds=0` on the scrape process's CPU, through `httpx.ASGITransport` (no TLS):
   every request starts and waits for a whole round.

A phase that overruns `--seconds` threefold is cut short (the adapter is overloaded) and the
table says so, as it says when endpoints failed or pods went unserved. Ratios and medians from
one run are what to compare: the two CPUs slow each other down.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvloop
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.procfs import cpu_seconds, descendants, pin
from pushkit.progress import draw_bar

ADAPTER_CPU = 0
ENDPOINT_CPU = 1


@dataclass(frozen=True)
class Placement:
    """Which CPU each process of a run gets, and the stand-ins' niceness."""

    what: str
    serving_cpu: int
    scrape_cpu: int
    # The endpoints stand in for the workers on other machines, the bench's client for the
    # HPA's kube-apiserver: whatever CPU they take from the adapter is not the adapter's.
    endpoint_cpu: int
    endpoint_nice: int
    client_cpu: int


PLACEMENTS = {
    # What the manifest gives an adapter over 1000 pods (manifests/base/adapter: two CPUs,
    # one for the serving process, one for the scrape process). The endpoints run on the
    # serving process's CPU at the lowest priority, so they answer in its idle time (it is
    # idle ~95% of a round) and never ahead of it; the scrape process has CPU 1 to itself.
    # The client shares CPU 0 too: it waits while the serving process answers it.
    "2": Placement(
        "serving process on CPU 0, scrape process on CPU 1; endpoints at nice 19 and this "
        "client on CPU 0",
        serving_cpu=0,
        scrape_cpu=1,
        endpoint_cpu=0,
        endpoint_nice=19,
        client_cpu=0,
    ),
    # Both adapter processes on one CPU, the stand-ins on the other.
    "1": Placement(
        "serving and scrape process on CPU 0; endpoints at nice 10 and this client on CPU 1",
        serving_cpu=0,
        scrape_cpu=0,
        endpoint_cpu=1,
        endpoint_nice=10,
        client_cpu=1,
    ),
}
WORKERS_PER_POD = 4
NAMESPACE = "live"
LABELS = {"app": "push"}
CONNECTED_PER_WORKER = 2500
API_PATH = (
    f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{NAMESPACE}/pods/*/socket_io_connected"
    "?labelSelector=app%3Dpush"
)
# Issue 14's targets on this machine (issue 3's were 250 ms at 400 endpoints, 20 ms, 2 s).
ROUND_TARGET_MS = 1000.0
API_P99_TARGET_MS = 10.0
AGE_TARGET_SECONDS = 1.0
# Rounds the adapter finishes before anything is measured: every keep-alive connection open.
WARM_UP_SECONDS = 3.0
# A phase that runs this many times longer than planned is stopped: the adapter is overloaded.
OVERTIME = 3.0


def pod_name(index: int) -> str:
    return f"push-{index:03d}"


# The endpoints: one process, every port, fixed bodies.


def busy_registry(pod: str, worker: int) -> CollectorRegistry:
    """A worker's registry a while into a match day: every labelled family has series."""
    from pushserver.exposition import ProcessCollector, WorkerIdentity, worker_registry
    from pushserver.stats import WorkerStats

    stats = WorkerStats(
        connected=CONNECTED_PER_WORKER,
        connect_total=41_230,
        disconnect_total=38_730,
        errors_total=57,
        receive_bytes=96_113_508,
        transmit_bytes=2_418_992_113,
        shed_total=310,
    )
    stats.events_received.update(joinByGameId=41_200, leaveByGameId=3_120, visibilityChange=9_870)
    stats.events_sent.update(score=1_204_551, gameUpdate=8_812_034, lineup=40_112)
    stats.client_errors.update(malformed_packet=12, rate_limited=40, bad_payload=5)
    stats.disconnects_by_reason.update(
        transport_close=30_114, ping_timeout=6_201, client_namespace_disconnect=2_415
    )
    stats.rejected_connections.update(overloaded=3)
    stats.publishes.update({"200": 91_233, "401": 2})
    identity = WorkerIdentity(pod, worker, "0.1.0")
    return worker_registry(stats, identity, ProcessCollector())


def busy_exposition(pod: str, worker: int) -> bytes:
    return generate_latest(busy_registry(pod, worker))


def bind_port_block(count: int) -> list[socket.socket]:
    """`count` listening sockets on consecutive ports below the ephemeral range (so no
    outgoing connection takes one meanwhile); bound right here, so nothing races for them."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        bound: list[socket.socket] = []
        try:
            for offset in range(count):
                sock = socket.socket()
                bound.append(sock)
                # A run just before leaves its closed connections in TIME_WAIT on these ports.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", base + offset))
                sock.listen(1024)
        except OSError:
            for sock in bound:
                sock.close()
            continue
        return bound
    raise RuntimeError(f"no block of {count} free ports found")


class _Endpoint(asyncio.Protocol):
    """One worker's /metrics on one connection, kept alive: each request answered with the
    bytes made for its query. Plain asyncio, not an HTTP framework: the endpoints stand in for
    4000 workers on other machines, and their own cost per request (aiohttp's was ~100 µs,
    4000 of them a round on one CPU) would bound the very round the bench measures."""

    def __init__(self, answer: Callable[[int, str], bytes]) -> None:
        self._answer = answer
        self._buffer = b""
        self._port = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # create_server's: a stream
        self._port = transport.get_extra_info("sockname")[1]

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("latin-1")
            self._transport.write(self._answer(self._port, target.partition("?")[2]))
            if b"\r\nconnection: close" in head.lower():
                self._transport.close()
                return


async def _endpoints(pipe: Connection, count: int) -> None:
    sockets = bind_port_block(count)
    base = sockets[0].getsockname()[1]
    registries = {
        base + k: busy_registry(pod_name(k // WORKERS_PER_POD), k % WORKERS_PER_POD)
        for k in range(count)
    }
    # Each answer is made once per query: the endpoints stand in for workers on other
    # machines, whose cost of writing their bodies is not the adapter's.
    answers: dict[tuple[int, str], bytes] = {}

    def answer(port: int, query: str) -> bytes:
        response = answers.get((port, query))
        if response is None:
            # `name[]` as a worker's prometheus_client exposition honours it.
            names = parse_qs(query).get("name[]")
            registry = registries[port]
            body = generate_latest(
                registry if names is None else registry.restricted_registry(names)
            )
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            response = answers[port, query] = head.encode() + body
        return response

    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: _Endpoint(answer), sock=sock) for sock in sockets]
    pipe.send({"base": base, "bytes": len(generate_latest(registries[base]))})
    # Until the parent says stop, or dies (the pipe then ends with EOFError).
    with contextlib.suppress(EOFError):
        await loop.run_in_executor(None, pipe.recv)
    for server in servers:
        server.close()


def _endpoints_main(pipe: Connection, count: int, nice: int, cpu: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, Ctrl-C included
    os.sched_setaffinity(0, {cpu})
    # The endpoints stand in for other machines: whatever shares their CPU (the bench's
    # client, or the serving process) goes first, so its latencies are its own and not its
    # wait behind 8000 endpoint requests a second.
    os.nice(nice)
    uvloop.run(_endpoints(pipe, count))


@contextlib.contextmanager
def endpoints(count: int, cpu: int = ENDPOINT_CPU, nice: int = 10) -> Iterator[dict[str, int]]:
    with spawned(_endpoints_main, (count, nice), "the endpoint process", cpu) as ready:
        yield ready


@contextlib.contextmanager
def spawned(
    target: Callable[..., None], args: tuple[Any, ...], what: str, cpu: int = ENDPOINT_CPU
) -> Iterator[Any]:
    """Run `target(pipe, *args, cpu)` in a spawned process; yield its first message (it sends
    one once it serves) and tell it to stop at the end."""
    ours, theirs = mp.get_context("spawn").Pipe()
    process = mp.get_context("spawn").Process(target=target, args=(theirs, *args, cpu), daemon=True)
    process.start()
    try:
        if not ours.poll(60):
            raise SystemExit(f"{what} did not start")
        yield ours.recv()
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


# The adapter: the real process, one per size.


def static_pods(base_port: int, endpoint_count: int) -> dict[str, Any]:
    pods = []
    for first in range(0, endpoint_count, WORKERS_PER_POD):
        pods.append(
            {
                "namespace": NAMESPACE,
                "name": pod_name(first // WORKERS_PER_POD),
                "labels": LABELS,
                "ip": "127.0.0.1",
                "metricsPort": base_port + first,
                "workers": min(WORKERS_PER_POD, endpoint_count - first),
            }
        )
    return {"pods": pods}


@dataclass
class Adapter:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    log_path: Path

    def client(self) -> httpx.Client:
        verify = ssl.create_default_context(cafile=str(self.cert_dir / "apiserver.crt"))
        # Longer than any round the adapter could be waiting for (rounds are cut at 1 s per
        # worker, but a loaded event loop stretches them).
        return httpx.Client(base_url=f"https://localhost:{self.port}", verify=verify, timeout=30)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def start_adapter(
    tmp: Path, pods_file: Path, name: str, cpu: int | None = ADAPTER_CPU
) -> Iterator[Adapter]:
    """The real adapter serving `pods_file`, pinned to `cpu` (None: wherever the kernel likes)."""
    ready, cert_dir = tmp / f"{name}-ready.json", tmp / f"{name}-certs"
    log_path = tmp / f"{name}.log"
    args = [
        sys.executable, "-m", "adapter",
        "--secure-port", "0",
        "--bind-address", "127.0.0.1",
        "--cert-dir", str(cert_dir),
        "--static-pods", str(pods_file),
        "--ready-file", str(ready),
        "--authentication-skip",
        "--log-level", "warning",
    ]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSCALE_ADAPTER_")}
    with log_path.open("wb") as log_file:
        # A process group of its own: Ctrl-C reaches the bench only, which stops the adapter.
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, env=environ, process_group=0
        )
    running = Adapter(process, 0, cert_dir, log_path)
    try:
        if cpu is not None:
            os.sched_setaffinity(process.pid, {cpu})
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the adapter did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        running.port = json.loads(ready.read_text())["port"]
        yield running
    finally:
        running.stop()
    log = log_path.read_text(errors="replace")
    if process.returncode != 0 or "Traceback" in log:
        say(f"adapter {name} exited {process.returncode}:\n{log}")


def own_metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").raise_for_status().text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus's histogram_quantile over cumulative counts {upper bound: count}: linear
    inside the bucket; the highest finite bound when the rank lands in +Inf."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def buckets(
    before: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    after: Mapping[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    path_part: str = "",
) -> dict[float, float]:
    """A histogram's cumulative counts {upper bound: count} between two reads of /metrics,
    summed over the series whose `path` label (if any) holds `path_part`."""
    counts: dict[float, float] = {}
    for (sample, labels), value in after.items():
        tags = dict(labels)
        if sample == f"{name}_bucket" and path_part in tags.get("path", ""):
            bound = float(tags["le"])
            counts[bound] = counts.get(bound, 0.0) + value - before.get((sample, labels), 0.0)
    return counts


def expected_values(inventory: Mapping[str, Any]) -> dict[str, float]:
    """Each pod's exact socket_io_connected: every worker's count summed."""
    return {pod["name"]: pod["workers"] * CONNECTED_PER_WORKER for pod in inventory["pods"]}


def served_pods(response: httpx.Response, expected: Mapping[str, float]) -> int:
    """Pods in an answer with their exact value (0 for an error status)."""
    if response.status_code != 200:
        return 0
    return sum(
        1
        for item in response.json()["items"]
        if float(item["value"]) == expected[item["describedObject"]["name"]]
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def say(text: str) -> None:
    sys.stderr.write(f"\n{text}\n")
    sys.stderr.flush()


def warmed_up(running: Adapter, client: httpx.Client) -> None:
    """Wait until the adapter is ready, then for its first rounds to settle."""
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"the adapter never got ready:\n{running.log_path.read_text()}")
        time.sleep(0.1)
    time.sleep(WARM_UP_SECONDS)


def _cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds of the serving process and of everything below it (the scrape process)."""
    return cpu_seconds(pid), sum(cpu_seconds(child) for child in descendants(pid))


def measure_adapter(
    running: Adapter,
    size: int,
    expected: Mapping[str, float],
    seconds: float,
    requests: int,
    placement: Placement,
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with running.client() as client:
        warmed_up(running, client)
        scrapers = descendants(running.process.pid)
        if len(scrapers) != 1:
            raise SystemExit(f"expected one scrape process below the adapter, found {scrapers}")
        pin(scrapers[0], placement.scrape_cpu)

        # 1. Quiet: nothing but the rounds, two reads of /metrics at the ends.
        pid = running.process.pid
        # The serving process and its scrape process (adapter.scrapeproc), apart.
        before, cpu_before = own_metrics(client), _cpu_split(pid)
        for second in range(int(seconds)):
            time.sleep(1)
            draw_bar(f"{size} quiet", second + 1, int(seconds))
        cpu_after, after = _cpu_split(pid), own_metrics(client)
        count = "pushscale_adapter_scrape_round_seconds_count", ()
        rounds = max(after[count] - before[count], 1)
        figures["cpu_ms_per_round"] = 1000 * (cpu_after[0] - cpu_before[0]) / rounds
        figures["scrape_cpu_ms_per_round"] = 1000 * (cpu_after[1] - cpu_before[1]) / rounds
        errors = sum(
            value - before.get((sample, labels), 0.0)
            for (sample, labels), value in after.items()
            if sample == "pushscale_adapter_scrape_errors_total"
        )
        figures["failed_per_round"] = errors / max(rounds, 1)

        # 2. The API, answering from the shared round. The rounds' durations come from the
        # adapter's own histogram: polling /debug/pods (~35 ms of the serving loop for 1000
        # pods) would hold up the very requests measured.
        latencies: list[float] = []
        served: list[int] = []
        before = own_metrics(client)
        begin = time.monotonic()
        for i in range(requests):
            if time.monotonic() > begin + OVERTIME * seconds:
                say(f"{size}: gave up after {i} of {requests} requests ({OVERTIME:g}x --seconds)")
                break
            time.sleep(max(0.0, begin + i * seconds / requests - time.monotonic()))
            started = time.perf_counter()
            try:
                response = client.get(API_PATH)
            except httpx.TimeoutException:
                response = None
            # The answer is read whole by now; checking it is this client's time, not the API's.
            latencies.append(1000 * (time.perf_counter() - started))
            served.append(0 if response is None else served_pods(response, expected))
            draw_bar(f"{size} api", i + 1, requests)
        after = own_metrics(client)
        ages = buckets(before, after, "pushscale_adapter_value_age_seconds")
        durations = buckets(before, after, "pushscale_adapter_scrape_round_seconds")
        # The adapter's own time per answer: from its app's first byte to its last, without
        # TLS, HTTP or this client (which shares CPU 1 with the endpoints).
        handled = buckets(
            before, after, "pushscale_adapter_request_duration_seconds", "/{resource}/{name}/"
        )
    figures.update(
        rounds_seen=durations.get(math.inf, 0.0),
        round_p50=1000 * histogram_quantile(0.5, durations),
        round_p99=1000 * histogram_quantile(0.99, durations),
        round_within_target=durations.get(ROUND_TARGET_MS / 1000, 0.0),
        api_p50=statistics.median(latencies),
        api_p99=percentile(latencies, 0.99),
        age_p50=histogram_quantile(0.5, ages),
        age_p99=histogram_quantile(0.99, ages),
        handled_p50=1000 * histogram_quantile(0.5, handled),
        handled_p99=1000 * histogram_quantile(0.99, handled),
        served_min=min(served),
        answered=len(latencies),
    )
    return figures


# Fresh: the adapter's app in-process, every request waiting for a round of its own.


async def _fresh_requests(
    pods_file: Path, size: int, expected: Mapping[str, float], count: int, planned_seconds: float
) -> list[tuple[float, float, int]]:
    from adapter.app import AppState, create_app
    from adapter.discovery import StaticDiscovery
    from adapter.instruments import Instruments
    from adapter.rounds import Rounds
    from adapter.scrape import Scraper, ScrapeSettings

    discovery = StaticDiscovery(pods_file)
    timings: list[tuple[float, float, int]] = []
    scraper = Scraper(ScrapeSettings())
    rounds = Rounds(
        scraper,
        discovery,
        interval_seconds=1.0,
        # Never fresh enough: each request waits for a round of its own.
        max_age_seconds=0.0,
        keep_seconds=61.0,
    )
    # Rounds never fresh enough, answers never too old: every request waits for its own.
    state = AppState(rounds, discovery, Instruments(), None, 60.0, max_value_age_seconds=60.0)
    transport = httpx.ASGITransport(app=create_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://adapter") as api:
        begin = time.monotonic()
        for i in range(count + 1):
            if i > 3 and time.monotonic() > begin + OVERTIME * planned_seconds:
                say(f"{size}: gave up after {i - 1} of {count} fresh requests")
                break
            started = time.perf_counter()
            response = await api.get(API_PATH)
            elapsed = time.perf_counter() - started
            if i:  # the first opened every connection
                duration = rounds.history[-1].duration_seconds
                served = served_pods(response, expected)
                timings.append((1000 * elapsed, 1000 * duration, served))
            draw_bar(f"{size} fresh", i + 1, count + 1)
            # Between the HPA's requests there is a round's worth of idle time too.
            await asyncio.sleep(0.1)
    await scraper.close()
    return timings


def measure_fresh(
    pods_file: Path,
    size: int,
    expected: Mapping[str, float],
    count: int,
    seconds: float,
    placement: Placement,
) -> dict[str, float]:
    # The scrape's CPU, now that the adapter process is gone: in-process, the round is most
    # of the work.
    os.sched_setaffinity(0, {placement.scrape_cpu})
    try:
        timings = uvloop.run(_fresh_requests(pods_file, size, expected, count, seconds))
    finally:
        os.sched_setaffinity(0, {placement.client_cpu})
    return {
        "fresh_p50": statistics.median(t for t, _, _ in timings),
        "fresh_round_p50": statistics.median(r for _, r, _ in timings),
        "fresh_served_min": min(s for _, _, s in timings),
    }


def verdict(figures: Mapping[str, float]) -> str:
    missed = []
    # Exact from the histogram: the target is one of its bounds.
    if figures["round_within_target"] < figures["rounds_seen"]:
        missed.append(f"round > {ROUND_TARGET_MS:.0f} ms")
    if not figures["api_p99"] <= API_P99_TARGET_MS:
        missed.append(f"API p99 > {API_P99_TARGET_MS:.0f} ms")
    if not figures["age_p99"] <= AGE_TARGET_SECONDS:
        missed.append(f"age > {AGE_TARGET_SECONDS:.0f} s")
    if figures["failed_per_round"]:
        missed.append(f"{figures['failed_per_round']:.0f} endpoints failed per round")
    if figures["served_min"] < figures["pods"]:
        missed.append(f"as few as {figures['served_min']} pods served")
    return "meets all" if not missed else "misses: " + "; ".join(missed)


COLUMNS = (
    ("endpoints", "{:.0f}"),
    ("pods", "{:.0f}"),
    ("round p50 ms", "{:.1f}"),
    ("round p99 ms", "{:.1f}"),
    ("API p50 ms", "{:.2f}"),
    ("API p99 ms", "{:.2f}"),
    ("fresh request p50 ms (one round)", "{:.1f}"),
    ("CPU ms per round: serving", "{:.1f}"),
    ("scrape process", "{:.1f}"),
    ("value age p99 s", "{:.2f}"),
)
KEYS = (
    "endpoints",
    "pods",
    "round_p50",
    "round_p99",
    "api_p50",
    "api_p99",
    "fresh_p50",
    "cpu_ms_per_round",
    "scrape_cpu_ms_per_round",
    "age_p99",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,400", help="worker endpoints per run")
    parser.add_argument("--requests", type=int, default=500, help="API requests per size")
    parser.add_argument("--seconds", type=float, default=10, help="per phase and size")
    parser.add_argument("--fresh-requests", type=int, default=20, help="per size")
    parser.add_argument(
        "--cpus",
        choices=sorted(PLACEMENTS),
        default="2",
        help="the adapter's CPUs: 2, one per process, as the manifest sizes it for 1000 pods;"
        " 1, both processes on one",
    )
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    placement = PLACEMENTS[args.cpus]

    os.sched_setaffinity(0, {placement.client_cpu})
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        endpoints(max(sizes), placement.endpoint_cpu, placement.endpoint_nice) as served,
    ):
        tmp = Path(tmp_name)
        for size in sizes:
            pods_file = tmp / f"pods-{size}.yaml"
            inventory = static_pods(served["base"], size)
            pods_file.write_text(yaml.safe_dump(inventory))
            expected = expected_values(inventory)
            figures: dict[str, Any] = {"endpoints": size, "pods": len(expected)}
            with start_adapter(tmp, pods_file, f"adapter-{size}", placement.serving_cpu) as running:
                figures.update(
                    measure_adapter(running, size, expected, args.seconds, args.requests, placement)
                )
            fresh = measure_fresh(
                pods_file, size, expected, args.fresh_requests, args.seconds, placement
            )
            figures.update(fresh)
            results.append(figures)
            sys.stderr.write("\n")

    def per_size(key: str, fmt: str) -> str:
        return ", ".join(f"{r['endpoints']}: {fmt.format(r[key])}" for r in results)

    print()
    print(f"Worker /metrics body {served['bytes']} bytes. {placement.what}.")
    print(
        "Rounds during the API phase (the adapter's round histogram; quantiles interpolated in"
        f" buckets of 0.25 s near 1 s): {per_size('rounds_seen', '{:.0f}')}; of them within"
        f" {ROUND_TARGET_MS:.0f} ms: {per_size('round_within_target', '{:.0f}')}."
    )
    print(f"API requests made (of --requests): {per_size('answered', '{}')}.")
    print(f"Endpoints failed per round: {per_size('failed_per_round', '{:.1f}')}.")
    print(f"Value age p50 s: {per_size('age_p50', '{:.2f}')}.")
    print(
        "API answers as the adapter timed them (its request histogram; buckets of 1, 2.5, 5, 10,"
        f" 25 ms): p50 ms {per_size('handled_p50', '{:.1f}')}; p99 ms"
        f" {per_size('handled_p99', '{:.1f}')}."
    )
    print(f"Fresh (in-process app, no TLS, one round each): round p50 ms "
          f"{per_size('fresh_round_p50', '{:.1f}')}; fewest pods served "
          f"{per_size('fresh_served_min', '{}')}.")  # fmt: skip
    print()
    header = [label for label, _ in COLUMNS] + ["verdict"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for figures in results:
        cells = [fmt.format(figures[key]) for (_, fmt), key in zip(COLUMNS, KEYS, strict=True)]
        print("| " + " | ".join([*cells, verdict(figures)]) + " |")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # Every process is stopped by now: the context managers above unwound first.
        sys.exit(130)
