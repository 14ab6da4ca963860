"""What the handoff costs: polling requests on a 1-worker pod (never handed) and a 4-worker pod
(three in four handed to the owner, `pushserver.handoff`), one after another.

    .venv/bin/python -m bench.handoff [--requests 1000]

Each pod gets one engine.io v4 polling session; then `--requests` POSTs of a NOOP, each on a new
TCP connection (as a browser's polls often are), so the kernel picks a worker for each. Printed:
the round trip (p50, p90), the share handed over (`pushscale_handoffs_total{result="ok"}`), and
the server's CPU per request (all workers, from /proc), with the 4-worker pod as a ratio of the
1-worker one, and the extra CPU per handed request. The event budget is raised so the NOOPs are
not rate-limited. One run on a shared machine: quote the ratios, not the milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.procfs import cpu_seconds
from pushkit.progress import draw_bar, finish_bar

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    workers: int
    requests: int
    handed: float
    p50_ms: float
    p90_ms: float
    cpu_us_per_request: float


def start_pod(workers: int, tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    ready = tmp / f"ready-{workers}.json"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pushserver", "--workers", str(workers), "--host", "127.0.0.1",
            "--port", "0", "--metrics-port", "0", "--ready-file", str(ready),
            "--event-rate", "100000", "--event-burst", "100000", "--log-level", "warning",
        ],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {workers}-worker pod did not start")
        time.sleep(0.1)
    info: dict[str, object] = json.loads(ready.read_text())
    return process, info


def _handed(metrics_ports: list[int]) -> float:
    total = 0.0
    for port in metrics_ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        for line in text.splitlines():
            if line.startswith('pushscale_handoffs_total{result="ok"}'):
                total += float(line.split()[-1])
    return total


def measure(workers: int, requests: int, tmp: Path) -> Result:
    process, info = start_pod(workers, tmp)
    try:
        port = info["port"]
        pids = [int(pid) for pid in info["workers"]]  # type: ignore[attr-defined]
        metrics_ports = [int(p) for p in info["metrics_ports"]]  # type: ignore[attr-defined]
        url = f"http://127.0.0.1:{port}/socket.io/"
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(limits=fresh, timeout=10) as http:
            opening = http.get(url, params={"EIO": "4", "transport": "polling"}).text
            params = {"EIO": "4", "transport": "polling", "sid": json.loads(opening[1:])["sid"]}
            http.post(url, params=params, content="40").raise_for_status()
            handed_before = _handed(metrics_ports)
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            times = []
            for done in range(requests):
                draw_bar(f"{workers}-worker pod", done, requests)
                started = time.perf_counter()
                response = http.post(url, params=params, content="6")
                times.append(time.perf_counter() - started)
                if response.text != "ok":
                    raise SystemExit(f"unexpected answer {response.status_code} {response.text}")
            finish_bar()
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            handed = _handed(metrics_ports) - handed_before
        quantiles = statistics.quantiles(times, n=10)
        return Result(
            workers, requests, handed / requests, statistics.median(times) * 1000,
            quantiles[8] * 1000, cpu / requests * 1e6,
        )  # fmt: skip
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(workers, args.requests, Path(tmp)) for workers in (1, 4)]
    one, four = results
    print(f"{'pod':<10}{'requests':>9}{'handed':>8}{'p50 ms':>9}{'p90 ms':>9}{'CPU µs/req':>12}")
    for r in results:
        print(
            f"{r.workers} worker{'s' if r.workers > 1 else ' '}{r.requests:>10}"
            f"{r.handed:>8.0%}{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}{r.cpu_us_per_request:>12.0f}"
        )
    print(
        f"ratio 4/1{'':>19}{four.p50_ms / one.p50_ms:>9.2f}{four.p90_ms / one.p90_ms:>9.2f}"
        f"{four.cpu_us_per_request / one.cpu_us_per_request:>12.2f}"
    )
    if four.handed > 0:
        extra = (four.cpu_us_per_request - one.cpu_us_per_request) / four.handed
        print(f"extra server CPU per handed request: {extra:.0f} µs (both workers together)")


if __name__ == "__main__":
    main()
