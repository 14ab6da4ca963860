"""API latency while one pod serves garbage: does one bad pod cost the healthy ones anything?

    .venv/bin/python -m bench.adapter_garbage [--pods 25] [--requests 300] [--seconds 10]
                                              [--kinds none,huge-line,nan,binary,slow-drip,mix]

`--pods` healthy pods of 4 workers each (the endpoint process of `bench/adapter.py`: a busy
worker's ~5 KB exposition per port) and, for every kind but `none`, one more pod of 4 workers
whose every endpoint serves that kind of garbage (`mix`: one kind per worker):

- `huge-line`: one line of ~1 MB (just under `--max-scrape-bytes`) that is not a sample, so
  the fast path gives up and prometheus_client's parser reads the whole line;
- `nan`: a busy worker's exposition with `socket_io_connected NaN`;
- `binary`: 512 KB of random bytes;
- `slow-drip`: a valid exposition, one line every 100 ms, so the 1 s scrape timeout cuts it.

For each kind the real `pushscale adapter` (CPU 0, default flags) serves them over TLS; after a
warm-up, `--requests` sequential keep-alive HPA requests (`pods/*/socket_io_connected`) are
spread over `--seconds`, meeting every phase of the round cycle, with `/debug/pods` polled
between them for each round's duration and the garbage pod's reason code. Every answer is
checked: a 200, every healthy pod at its exact value, the garbage pod absent. The table at the
end compares each kind with `none`; the garbage endpoints share CPU 1 with the healthy ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import uvloop
import yaml
from aiohttp import web

from bench.adapter import (
    API_PATH,
    ENDPOINT_CPU,
    LABELS,
    NAMESPACE,
    OVERTIME,
    WORKERS_PER_POD,
    Adapter,
    bind_port_block,
    busy_exposition,
    endpoints,
    expected_values,
    own_metrics,
    percentile,
    spawned,
    start_adapter,
    static_pods,
    warmed_up,
)
from pushkit.progress import draw_bar, finish_bar

KINDS = ("huge-line", "nan", "binary", "slow-drip")
GARBAGE_POD = "garbage"
# Under the adapter's default 1 MiB cap, so the body is read and parsed, not cut.
HUGE_LINE_BYTES = 1_000_000
DRIP_SECONDS = 0.1

# Rounds are read from /debug/pods between requests: cheap at these sizes (tens of pods).
DEBUG_POLL_SECONDS = 0.25


def garbage_body(kind: str, worker: int) -> bytes:
    if kind == "huge-line":
        return b"socket_io_connected 1" + b" " * HUGE_LINE_BYTES + b"x\n"
    if kind == "nan":
        text = busy_exposition(GARBAGE_POD, worker).decode()
        nan = text.replace("\nsocket_io_connected 2500.0\n", "\nsocket_io_connected NaN\n")
        assert nan != text, "the busy exposition's gauge line moved"
        return nan.encode()
    if kind == "binary":
        return random.Random(worker).randbytes(512 * 1024)
    return busy_exposition(GARBAGE_POD, worker)  # slow-drip: fine text, far too slowly


async def _garbage(pipe: Connection, kinds: list[str]) -> None:
    sockets = bind_port_block(len(kinds))
    base = sockets[0].getsockname()[1]
    by_port = {base + i: (kind, garbage_body(kind, i)) for i, kind in enumerate(kinds)}

    async def metrics(request: web.BaseRequest) -> web.StreamResponse:
        assert request.transport is not None
        kind, body = by_port[request.transport.get_extra_info("sockname")[1]]
        if kind != "slow-drip":
            return web.Response(body=body, headers={"Content-Type": "text/plain"})
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        # The adapter hangs up at its timeout; the write after that fails, and we stop.
        with contextlib.suppress(ConnectionError):
            for line in body.splitlines(keepends=True):
                await response.write(line)
                await asyncio.sleep(DRIP_SECONDS)
        return response

    handler = web.Server(metrics)
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(handler, sock=sock) for sock in sockets]
    pipe.send({"base": base})
    with contextlib.suppress(EOFError):
        await loop.run_in_executor(None, pipe.recv)
    for server in servers:
        server.close()
    await handler.shutdown(1.0)


def _garbage_main(pipe: Connection, kinds: list[str], cpu: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.sched_setaffinity(0, {cpu})
    uvloop.run(_garbage(pipe, kinds))


@contextlib.contextmanager
def garbage_endpoints(kinds: list[str]) -> Iterator[int]:
    """One process serving a pod's worth of garbage; yields the first port."""
    with spawned(_garbage_main, (kinds,), "the garbage process") as ready:
        yield ready["base"]


def check(response: httpx.Response, expected: Mapping[str, float]) -> str | None:
    """What is wrong with an answer, or None: a 200 with every healthy pod exact, no other."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    got = {i["describedObject"]["name"]: float(i["value"]) for i in response.json()["items"]}
    if got != dict(expected):
        return f"values {sorted(set(got) ^ set(expected)) or 'differ'}"
    return None


def left_out(metrics: Mapping[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (sample, labels), value in metrics.items()
        if sample == "pushscale_adapter_pods_left_out_total"
    }


def measure(
    running: Adapter, kind: str, expected: Mapping[str, float], seconds: float, requests: int
) -> dict[str, Any]:
    with running.client() as client:
        warmed_up(running, client)
        before = left_out(own_metrics(client))
        durations: dict[int, float] = {}
        codes: set[str] = set()
        latencies: list[float] = []
        wrong: list[str] = []
        begin = next_poll = time.monotonic()
        for i in range(requests):
            if time.monotonic() > begin + OVERTIME * seconds:
                print(f"\n{kind}: gave up after {i} of {requests} requests", file=sys.stderr)
                break
            while True:
                now = time.monotonic()
                if now >= next_poll:
                    debug = client.get("/debug/pods", params={"format": "json"}).json()
                    durations[debug["round"]["number"]] = debug["round"]["durationSeconds"]
                    codes |= {
                        pod["reasonCode"] for pod in debug["pods"] if pod["name"] == GARBAGE_POD
                    }
                    next_poll = time.monotonic() + DEBUG_POLL_SECONDS
                if now >= begin + i * seconds / requests:
                    break
                time.sleep(0.001)
            started = time.perf_counter()
            try:
                problem = check(client.get(API_PATH), expected)
            except httpx.TimeoutException:
                problem = "timeout"
            latencies.append(1000 * (time.perf_counter() - started))
            if problem is not None:
                wrong.append(problem)
            draw_bar(f"{kind:>10} api", i + 1, requests)
        finish_bar()
        after = left_out(own_metrics(client))
    counted = {code: after[code] - before.get(code, 0.0) for code in after}
    round_ms = [1000 * d for d in durations.values()]
    return {
        "kind": kind,
        "answered": len(latencies),
        "wrong": len(wrong),
        "first_wrong": wrong[0] if wrong else "",
        "rounds": len(round_ms),
        "round_p50": statistics.median(round_ms),
        "round_max": max(round_ms),
        "api_p50": statistics.median(latencies),
        "api_p99": percentile(latencies, 0.99),
        "api_max": max(latencies),
        "codes": ", ".join(sorted(code for code in codes if code)) or "-",
        "counted": ", ".join(f"{c} +{v:.0f}" for c, v in sorted(counted.items()) if v) or "-",
    }


def inventory_for(
    kind: str, healthy_base: int, pods: int, garbage_base: int | None
) -> dict[str, Any]:
    inventory = static_pods(healthy_base, pods * WORKERS_PER_POD)
    if garbage_base is not None:
        inventory["pods"].append(
            {"namespace": NAMESPACE, "name": GARBAGE_POD, "labels": LABELS, "ip": "127.0.0.1",
             "metricsPort": garbage_base, "workers": WORKERS_PER_POD}
        )  # fmt: skip
    return inventory


def kinds_of(kind: str) -> list[str]:
    return list(KINDS) if kind == "mix" else [kind] * WORKERS_PER_POD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=25, help="healthy pods of 4 workers")
    parser.add_argument("--requests", type=int, default=300, help="API requests per kind")
    parser.add_argument("--seconds", type=float, default=10, help="per kind")
    parser.add_argument("--kinds", default="none," + ",".join(KINDS) + ",mix")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in ("none", "mix", *KINDS):
            parser.error(f"unknown kind {kind!r}")

    os.sched_setaffinity(0, {ENDPOINT_CPU})
    results = []
    with tempfile.TemporaryDirectory() as tmp_name, endpoints(args.pods * WORKERS_PER_POD) as ok:
        tmp = Path(tmp_name)
        for kind in kinds:
            with contextlib.ExitStack() as stack:
                base = (
                    None
                    if kind == "none"
                    else stack.enter_context(garbage_endpoints(kinds_of(kind)))
                )
                inventory = inventory_for(kind, ok["base"], args.pods, base)
                pods_file = tmp / f"pods-{kind}.yaml"
                pods_file.write_text(yaml.safe_dump(inventory))
                expected = expected_values(inventory)
                expected.pop(GARBAGE_POD, None)
                running = stack.enter_context(start_adapter(tmp, pods_file, f"adapter-{kind}"))
                results.append(measure(running, kind, expected, args.seconds, args.requests))

    baseline = next((r for r in results if r["kind"] == "none"), None)
    print()
    print(f"{args.pods} healthy pods x {WORKERS_PER_POD} workers (+1 garbage pod of "
          f"{WORKERS_PER_POD} workers per kind); {args.requests} requests over "
          f"{args.seconds:g} s per kind.")  # fmt: skip
    print()
    header = ["kind", "answers", "wrong", "rounds seen", "round p50 ms", "round max ms",
              "API p50 ms", "API p99 ms", "API max ms", "p99 vs none", "garbage pod's code",
              "pods_left_out_total"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        ratio = f"{r['api_p99'] / baseline['api_p99']:.2f}x" if baseline else "-"
        cells = [r["kind"], str(r["answered"]), f"{r['wrong']} {r['first_wrong']}".strip(),
                 str(r["rounds"]), f"{r['round_p50']:.1f}", f"{r['round_max']:.1f}",
                 f"{r['api_p50']:.2f}", f"{r['api_p99']:.2f}", f"{r['api_max']:.2f}", ratio,
                 r["codes"], r["counted"]]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
