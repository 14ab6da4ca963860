"""How much a /metrics scrape costs with 0 and with 20k sockets open.

    .venv/bin/python -m bench.scrape [--sockets 20000] [--workers 2] [--scrapes 50]

Starts `pushscale server` (embedded Redis), scrapes every worker `--scrapes` times while idle,
opens `--sockets` idle clients (bench/agents.py, pinned to the last CPU), scrapes again, and
prints a table. The claim it
checks: a scrape is O(series), so its time and size do not grow with the number of sockets.
Ratios (20k ÷ idle) are what to compare across machines; absolute times vary.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.agents import Agents
from pushkit.progress import draw_bar


def start_server(workers: int, ready: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pushserver",
            "--workers",
            str(workers),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--ready-file",
            str(ready),
            "--log-level",
            "warning",
        ],
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    return process, json.loads(ready.read_text())


def scrape_times(ports: list[int], count: int, label: str) -> list[tuple[float, float, int]]:
    """Per worker: (median ms, p95 ms, body bytes)."""
    results = []
    with httpx.Client() as http:
        for w, port in enumerate(ports):
            times = []
            size = 0
            for i in range(count):
                start = time.perf_counter()
                response = http.get(f"http://127.0.0.1:{port}/metrics")
                times.append((time.perf_counter() - start) * 1000)
                size = len(response.content)
                draw_bar(label, w * count + i + 1, len(ports) * count)
            times.sort()
            results.append((statistics.median(times), times[int(0.95 * (count - 1))], size))
    sys.stderr.write("\n")
    return results


def connected(ports: list[int]) -> list[int]:
    counts = []
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("socket_io_connected "))
        counts.append(int(float(line.split()[1])))
    return counts


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--rate", type=float, default=500, help="new connections per second")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        process, info = start_server(args.workers, Path(tmp) / "ready.json")
        ports: list[int] = info["metrics_ports"]  # type: ignore[assignment]
        pids: list[int] = info["workers"]  # type: ignore[assignment]
        try:
            idle = scrape_times(ports, args.scrapes, "idle scrape")
            rss_before = [rss_kib(pid) for pid in pids]
            agents = Agents(3, (os.cpu_count() or 1) - 1)
            try:
                opened = agents.open(int(info["port"]), args.sockets, args.rate, "bench")  # type: ignore[call-overload]
                time.sleep(2)
                counts = connected(ports)
                rss_after = [rss_kib(pid) for pid in pids]
                loaded = scrape_times(ports, args.scrapes, "loaded scrape")
            finally:
                agents.stop()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

    print()
    print(f"sockets opened {opened['opened']}, failed {opened['failures']}; per worker {counts}")
    print()
    header = (
        "worker",
        "sockets",
        "idle p50 ms",
        "loaded p50 ms",
        "p50 ratio",
        "idle p95 ms",
        "loaded p95 ms",
        "body bytes idle→loaded",
        "RSS KiB/socket",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for w in range(len(ports)):
        per_socket = (rss_after[w] - rss_before[w]) / counts[w] if counts[w] else 0.0
        print(
            " | ".join(
                [
                    str(w),
                    str(counts[w]),
                    f"{idle[w][0]:.2f}",
                    f"{loaded[w][0]:.2f}",
                    f"{loaded[w][0] / idle[w][0]:.2f}",
                    f"{idle[w][1]:.2f}",
                    f"{loaded[w][1]:.2f}",
                    f"{idle[w][2]}→{loaded[w][2]}",
                    f"{per_socket:.1f}",
                ]
            )
        )


if __name__ == "__main__":
    main()
