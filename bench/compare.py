"""Our worker against the plain python-socketio baseline and two Node anchors, in one run.

    .venv/bin/python -m bench.compare [--servers node,uws,pushscale,baseline] [--quick]

The anchors: `node`, socket.io 4.8 on Node's http server (the seed's system, bench/node/
server.js) and `uws`, the same socket.io on uWebSockets.js through `io.attachApp`
(bench/node/server_uws.js; npm's unofficial build @trufflesuite/uws-js-unofficial 20.30,
without its optional add-ons), the fastest set-up socket.io offers.

Each server runs as one process (our server: one worker) pinned to CPU 0; the load generator
(bench/agents.py: fast raw socket.io clients in separate processes) runs on CPU 1, so the
client is not the bottleneck. For each server, on a fresh process:

1. memory per idle connection: RSS growth ÷ sockets, at 5k, 10k and 19k sockets;
2. idle CPU with 10k sockets (heartbeats only), over 30 s;
3. fan-out: time from POST /publish until the last of 10k clients in the room has the event,
   and the server's CPU for it (less its idle rate), medians of 5;

then, on another fresh process, 4. the highest new-connection rate (steps of 250 … 4000/s, 3 s
each) with zero errors (a failed handshake or a socket.io connect slower than 5 s), and the
server CPU each new connection cost at that step. With one CPU for the load generator, the rate
tops out near what the generator can open (~1500/s here); the CPU cost per connection says how
far each server itself could go.

Figures are printed as a table with ratios to each anchor: these machines are noisy and shared,
so ratios measured in one run are what to quote. Needs `npm ci` in bench/node (scripts/setup).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.agents import Agents
from bench.procfs import cpu_seconds, user_seconds
from pushkit.progress import draw_bar

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0
AGENT_CPU = 1
RATES = (250, 500, 1000, 1500, 2000, 3000, 4000)
MEMORY_STEPS = (5000, 10000, 19000)
# Sockets are opened at this pace in the memory phase, below every server's limit.
GENTLE_RATE = 400.0
FANOUT_ROOM_SIZE = 10000
# The anchors: socket.io 4.8 on Node's http server (the seed's system) and on uWebSockets.js.
NODE_SERVERS = {"node": "server.js", "uws": "server_uws.js"}


@dataclass
class Server:
    name: str
    port: int
    pid: int  # the process that holds the sockets
    process: subprocess.Popen[bytes]
    publish_headers: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.1)
    raise SystemExit(f"no answer from {url}")


@contextlib.contextmanager
def start(name: str, tmp: Path) -> Iterator[Server]:
    port = _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if name in NODE_SERVERS:
        node = shutil.which("node") or "node"
        args = [str(port), str(_free_port())] if name == "node" else [str(port)]
        process = subprocess.Popen(
            [node, str(ROOT / "bench/node" / NODE_SERVERS[name]), *args], **quiet
        )  # type: ignore[call-overload]
        _wait_http(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling")
        server = Server(name, port, process.pid, process)
    elif name == "baseline":
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline_server", str(port)], cwd=ROOT, **quiet
        )  # type: ignore[call-overload]
        _wait_http(f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling")
        server = Server(name, port, process.pid, process)
    else:
        token = secrets.token_urlsafe(24)
        ready = tmp / f"ready-{port}.json"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pushserver",
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--ready-file",
                str(ready),
                "--max-connections",
                "19500",
                "--recommended-connections",
                "100000",
                "--log-level",
                "warning",
                "--drain-seconds",
                "1",
            ],
            env={**os.environ, "PUSHSCALE_PUBLISH_TOKEN": token},
            cwd=ROOT,
            **quiet,
        )  # type: ignore[call-overload]
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        worker = json.loads(ready.read_text())["workers"][0]
        server = Server(name, port, worker, process, {"authorization": f"Bearer {token}"})
    os.sched_setaffinity(server.pid, {SERVER_CPU})
    try:
        yield server
    finally:
        server.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"process {pid} is gone")


def publish(server: Server, game: str, sent_at: float) -> None:
    response = httpx.post(
        f"http://127.0.0.1:{server.port}/publish",
        json={"gameId": game, "event": "score", "data": {"t": sent_at}},
        headers=server.publish_headers,
        timeout=30,
    )
    response.raise_for_status()


def say(text: str) -> None:
    sys.stderr.write(f"\n{text}\n")
    sys.stderr.flush()


def measure_steady(name: str, agents: Agents, tmp: Path, quick: bool) -> dict[str, float]:
    figures: dict[str, float] = {}
    steps = (1000, 2000, 3000) if quick else MEMORY_STEPS
    with start(name, tmp) as server:
        time.sleep(1)
        base = rss_kib(server.pid)
        opened = 0
        agent = 0
        for step in steps:
            result = agents.open(server.port, step - opened, GENTLE_RATE, "bench", agent)
            agent = result["next_agent"]
            if result["failures"]:
                say(f"{name}: {result['failures']} failures opening to {step}: {result['why']}")
            opened = step
            time.sleep(2)
            figures[f"mem_{step}"] = (rss_kib(server.pid) - base) / step
            draw_bar(f"{name} mem", steps.index(step) + 1, len(steps))
            if step == steps[1]:
                figures.update(idle_and_fanout(server, agents, step, quick))
        agents.broadcast("close_all")
    return figures


def idle_and_fanout(server: Server, agents: Agents, sockets: int, quick: bool) -> dict[str, float]:
    window = 10.0 if quick else 30.0
    before = cpu_seconds(server.pid)
    time.sleep(window)
    idle_cores = (cpu_seconds(server.pid) - before) / window
    idle_cpu = 100 * idle_cores
    times, costs, user_costs = [], [], []
    for round_ in range(5):
        agents.broadcast("arm")
        cpu_before, started = cpu_seconds(server.pid), time.monotonic()
        user_before = user_seconds(server.pid)
        sent_at = time.time()
        publish(server, "bench", sent_at)
        # Each agent waits for its own clients.
        reports = agents.call(
            "arrivals",
            {i: (r["connected"], 30.0) for i, r in enumerate(agents.broadcast("alive"))},
        )
        got = sum(r["events"] for r in reports)
        if got < sockets:
            say(f"{server.name}: fan-out round {round_} reached {got} of {sockets}")
        times.append(max(r["last"] for r in reports) - sent_at)
        # The server's CPU for the publish: the POST, the Redis round trip and every write,
        # less what its heartbeats cost meanwhile.
        spent = cpu_seconds(server.pid) - cpu_before
        costs.append(spent - idle_cores * (time.monotonic() - started))
        user_costs.append(user_seconds(server.pid) - user_before)
        time.sleep(1)
    return {
        "idle_cpu": idle_cpu,
        "fanout": statistics.median(times),
        "fanout_cpu_ms": 1000 * statistics.median(costs),
        "fanout_user_ms": 1000 * statistics.median(user_costs),
    }


def measure_rate(name: str, agents: Agents, tmp: Path, quick: bool) -> dict[str, float]:
    best = 0.0
    cpu_per_connection = 0.0
    rates = RATES[:4] if quick else RATES
    with start(name, tmp) as server:
        time.sleep(1)
        for rate in rates:
            count = min(int(rate * 3), 9000)
            before = cpu_seconds(server.pid)
            result = agents.open(server.port, count, rate, "rate")
            spent = cpu_seconds(server.pid) - before
            agents.broadcast("close_all")
            time.sleep(3)  # let the server finish closing before the next step
            draw_bar(f"{name} rate", rates.index(rate) + 1, len(rates))
            if result["failures"]:
                say(f"{name}: {rate}/s: {result['failures']} errors, e.g. {result['why']}")
                break
            best = float(rate)
            # The server's own cost, whatever the load generator can deliver.
            cpu_per_connection = 1000 * spent / max(1, result["opened"])
    return {
        "rate": best,
        "cpu_ms_per_connection": cpu_per_connection,
        "cpu_ceiling": 1000 / cpu_per_connection if cpu_per_connection else 0.0,
    }


ROWS = (
    ("rate", "new connections/s, zero errors (highest step)", "{:.0f}", True),
    ("cpu_ms_per_connection", "server CPU ms per new connection (at that step)", "{:.3f}", False),
    ("cpu_ceiling", "CPU-bound ceiling, connections/s (1000 ÷ CPU ms)", "{:.0f}", True),
    ("mem_5000", "KiB per idle connection at 5k", "{:.1f}", False),
    ("mem_10000", "KiB per idle connection at 10k", "{:.1f}", False),
    ("mem_19000", "KiB per idle connection at 19k", "{:.1f}", False),
    ("fanout", "10k fan-out, s (median of 5)", "{:.3f}", False),
    ("fanout_cpu_ms", "server CPU ms per 10k fan-out (median of 5)", "{:.1f}", False),
    ("fanout_user_ms", "… of it user space, ms (the rest: the kernel's)", "{:.1f}", False),
    ("idle_cpu", "idle CPU at 10k, % of a core", "{:.1f}", False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="node,uws,pushscale,baseline")
    parser.add_argument("--quick", action="store_true", help="fewer sockets, for a smoke run")
    args = parser.parse_args()
    names = args.servers.split(",")
    results: dict[str, dict[str, float]] = {}
    agents = Agents(3, AGENT_CPU)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                say(f"== {name}")
                results[name] = measure_steady(name, agents, Path(tmp), args.quick)
                results[name].update(measure_rate(name, agents, Path(tmp), args.quick))
    finally:
        agents.stop()
    print()
    anchors = [n for n in names if n in NODE_SERVERS]
    ratios = [(n, a) for n in names if n not in NODE_SERVERS for a in anchors]
    header = [*names, *(f"{n} ÷ {a}" for n, a in ratios)]
    print("| figure | " + " | ".join(header) + " |")
    print("|---" * (1 + len(header)) + "|")
    for key, label, fmt, _higher_is_better in ROWS:
        values = [results[n].get(key) for n in names]
        cells = [fmt.format(v) if v is not None else "-" for v in values]
        for n, a in ratios:
            value, reference = results[n].get(key), results[a].get(key)
            cells.append(f"{value / reference:.2f}" if value and reference else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
