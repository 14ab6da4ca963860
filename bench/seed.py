"""The seed's targets for one pod of 4 workers, phase by phase; so far the `burst` phase.

    .venv/bin/python -m bench.seed burst [--rate 4000] [--seconds 20] [--agents N]

`burst` starts `pushscale server --workers 4` (embedded Redis), then has agent processes
(bench/agents.py, each bound to its own 127.0.0.x) open `--rate` new connections per second for
`--seconds`, each doing what the seed's viewers do: socket.io over websocket, then `joinByGameId`.
Every connection is held until the end, so rate * seconds must fit in the pod's
`--max-connections` (15000 per worker by default). It prints the connections attempted, errors,
connect latency, the achieved rate, the CPU of the pod and of the load generator in cores, and
`socket_io_connected` summed over the workers against the clients that think they are connected.

Server and generator share this machine's CPUs: when the rate is missed, the CPU columns say
which side ran out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from bench.agents import MAX_PER_AGENT, Agents
from bench.cluster import ClusterError, enter_private_network
from bench.procfs import cpu_seconds, descendants, machine_busy_seconds
from bench.scrape import start_server
from bench.seed_hold import HoldResult, hold
from bench.seed_max import MaxResult, max_connections
from bench.seed_plot import draw
from pushkit.progress import draw_bar, finish_bar

WORKERS = 4
MAX_CONNECTIONS_PER_WORKER = 15000  # the server's --max-connections default


def connected_total(http: httpx.Client, ports: list[int]) -> int:
    total = 0
    for port in ports:
        text = http.get(f"http://127.0.0.1:{port}/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("socket_io_connected "))
        total += int(float(line.split()[1]))
    return total


def rejections(http: httpx.Client, ports: list[int]) -> dict[str, int]:
    """The server's own account of refused connections, by reason, summed over the workers."""
    reasons: dict[str, int] = {}
    for port in ports:
        for line in http.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
            if line.startswith("pushscale_connections_rejected_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                reasons[reason] = reasons.get(reason, 0) + int(float(line.split()[-1]))
    return {reason: n for reason, n in reasons.items() if n}


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[int(q * (len(sorted_values) - 1))] if sorted_values else 0.0


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    # A SIGTERM to the bench must still run the finally blocks that stop the server and agents.
    raise SystemExit(128 + signum)


def burst(args: argparse.Namespace) -> dict[str, Any]:
    total = int(args.rate * args.seconds)
    capacity = WORKERS * MAX_CONNECTIONS_PER_WORKER
    if total > capacity * 0.9:
        # Sockets spread over the workers only roughly evenly; above ~90% one worker refuses.
        raise SystemExit(
            f"{total} held connections do not fit in {WORKERS} workers of "
            f"{MAX_CONNECTIONS_PER_WORKER}: lower --rate or --seconds"
        )
    agent_count = max(args.agents, math.ceil(total / MAX_PER_AGENT))
    if agent_count > 200:
        raise SystemExit("more than 200 agents: the source addresses 127.0.0.10+ would overflow")
    base, extra = divmod(total, agent_count)
    shares = [base + (1 if i < extra else 0) for i in range(agent_count)]

    with tempfile.TemporaryDirectory() as tmp:
        server, info = start_server(WORKERS, Path(tmp) / "ready.json")
        agents: Agents | None = None
        finished = False
        try:
            port = int(info["port"])  # type: ignore[call-overload]
            ports: list[int] = info["metrics_ports"]  # type: ignore[assignment]
            workers: list[int] = info["workers"]  # type: ignore[assignment]
            agents = Agents(agent_count, args.agent_cpu)
            agents.broadcast("alive")  # every agent has started its loop before the clock starts
            pod = [server.pid, *descendants(server.pid)]
            redis = [p for p in pod if p not in workers and p != server.pid]
            generator = [os.getpid(), *(p.pid for p in agents.processes if p.pid is not None)]
            server_before = sum(cpu_seconds(p) for p in [server.pid, *workers])
            redis_before = sum(cpu_seconds(p) for p in redis)
            generator_before = sum(cpu_seconds(p) for p in generator)
            machine_before = machine_busy_seconds()
            started = time.monotonic()
            for index, share in enumerate(shares):
                agents.pipes[index].send(("open", (port, share, args.rate * share / total, "seed")))
            results: dict[int, dict[str, Any]] = {}
            with httpx.Client() as http:
                # The bar counts what the server counts, which is what the seed's dashboards saw.
                while len(results) < agent_count:
                    waiting = [agents.pipes[i] for i in range(agent_count) if i not in results]
                    for ready in wait(waiting, timeout=0.5):
                        assert isinstance(ready, Connection)
                        results[agents.pipes.index(ready)] = ready.recv()
                    draw_bar("burst", min(connected_total(http, ports), total), total)
                wall = time.monotonic() - started
                server_cpu = sum(cpu_seconds(p) for p in [server.pid, *workers]) - server_before
                redis_cpu = sum(cpu_seconds(p) for p in redis) - redis_before
                generator_cpu = sum(cpu_seconds(p) for p in generator) - generator_before
                machine_cpu = machine_busy_seconds() - machine_before
                time.sleep(1.0)  # let the last CONNECTs' gauge updates land
                server_connected = connected_total(http, ports)
                refused = rejections(http, ports)
            finish_bar()
            client_connected = sum(r["connected"] for r in agents.broadcast("alive"))
            latencies = sorted(x for r in results.values() for x in r["latencies"])
            opened = sum(r["opened"] for r in results.values())
            last = max(r["last_connected_seconds"] for r in results.values())
            agents.stop()
            finished = True
        finally:
            if agents is not None and not finished:
                # An agent busy in `open` would not read a "stop" until it is done.
                for process in agents.processes:
                    process.terminate()
                for process in agents.processes:
                    process.join(10)
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "agents": agent_count,
        "attempted": total,
        "opened": opened,
        "errors": sum(r["failures"] for r in results.values()),
        "why": [w for r in results.values() for w in r["why"]][:3],
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else 0.0) * 1000,
        "issue_rate": total / max(r["issued_seconds"] for r in results.values()),
        "achieved_rate": opened / last if last else 0.0,
        "wall": wall,
        "server_cores": server_cpu / wall,
        "redis_cores": redis_cpu / wall,
        "generator_cores": generator_cpu / wall,
        # Whatever else shares the machine (kernel softirq work not charged to us, other jobs).
        "other_cores": (machine_cpu - server_cpu - redis_cpu - generator_cpu) / wall,
        "server_connected": server_connected,
        "refused": refused,
        "client_connected": client_connected,
    }


def print_burst(r: dict[str, Any]) -> None:
    print()
    print(
        f"burst: {r['rate']:g}/s for {r['seconds']:g} s, {WORKERS} workers, {r['agents']} agents,"
        f" {os.cpu_count()} CPUs"
    )
    if r["why"]:
        print(f"first errors: {r['why']}")
    if r["refused"]:
        print(f"refused by the server (pushscale_connections_rejected_total): {r['refused']}")
    print()
    rows = [
        ("connections attempted", f"{r['attempted']}"),
        ("connected", f"{r['opened']}"),
        ("errors", f"{r['errors']}"),
        ("connect p50 ms", f"{r['p50_ms']:.1f}"),
        ("connect p99 ms", f"{r['p99_ms']:.1f}"),
        ("connect max ms", f"{r['max_ms']:.1f}"),
        ("target rate /s", f"{r['rate']:g}"),
        ("attempts issued /s", f"{r['issue_rate']:.0f}"),
        ("achieved rate /s (connected ÷ time to last connect)", f"{r['achieved_rate']:.0f}"),
        ("phase wall s", f"{r['wall']:.1f}"),
        ("server CPU, cores (supervisor + workers)", f"{r['server_cores']:.2f}"),
        ("embedded Redis CPU, cores", f"{r['redis_cores']:.2f}"),
        ("load generator CPU, cores (agents + this process)", f"{r['generator_cores']:.2f}"),
        (
            "rest of the machine, cores (other processes, uncharged kernel)",
            f"{r['other_cores']:.2f}",
        ),
        ("socket_io_connected summed over workers", f"{r['server_connected']}"),
        ("clients that think they are connected", f"{r['client_connected']}"),
    ]
    print("| figure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


SEED = {
    "ramp": "500/s sustained while autoscaling 1 -> 4 pods",
    "held": "160,000 (4 pods x 4 workers x 10k)",
    "errors": "none reported",
    "exact": "not measured (one random worker's value, a quarter of the pod)",
    "memory": "not reported",
    "idle": "under 1.5 of 4 cores per pod while autoscaling",
    "killed": "40,000 (one of 4 pods)",
    "lost": "none lost",
    "unreported": "not reported",
}


def print_hold(r: HoldResult) -> None:
    f = r.figures
    kb = "{:.1f} KB".format

    def per_connection(key: str) -> str:
        value = f.get(key)
        return "-" if value is None else kb(value / 1024)

    rows = [
        ("connections held (4 workers a pod)", f"{f.get('held', 0):,}", SEED["held"]),
        ("ramp: rate reached /s", f"{f['rampRate']:.0f} (asked {r.rate:g})", SEED["ramp"]),
        ("ramp: failed attempts", f"{f['rampFailures']}", SEED["errors"]),
        ("ramp: connect p50 / p99 (bucket bound)",
         f"<= {f['rampConnectP50Ms']:.0f} / {f['rampConnectP99Ms']:.0f} ms", SEED["unreported"]),
        ("ramp: CPU cores pods / generator / sampling / machine",
         f"{f['rampPodCores']:.2f} / {f['rampGeneratorCores']:.2f} / {f['rampBenchCores']:.2f}"
         f" / {f['rampMachineCores']:.2f}", SEED["unreported"]),
        ("|served - truth| per pod, quiet moments (max)",
         f"{f['holdQuietWorstDiff']} over {f['holdQuietSamples']} s", SEED["exact"]),
        ("|served - truth| per pod while ramping (max)", f"{f['rampWorstDiff']}", SEED["exact"]),
        ("memory per connection: pods (PSS)", per_connection("podsBytesPerConnection"),
         SEED["memory"]),
        ("memory per connection: clients (PSS)", per_connection("generatorBytesPerConnection"),
         SEED["memory"]),
        ("memory per connection: kernel slab, both ends",
         per_connection("kernelBytesPerConnection"), SEED["memory"]),
        ("idle CPU cores: all pods / generator / sampling / adapter",
         f"{f['idlePodCores']:.2f} / {f['idleGeneratorCores']:.2f} / {f['idleBenchCores']:.2f}"
         f" / {f['idleAdapterCores']:.2f}", SEED["idle"]),
    ]  # fmt: skip
    if "drops" in f:
        back = f["secondsUntilAllBack"]
        dropped_by = f["secondsUntilServiceDroppedPod"]
        rows += [
            ("kill: sockets on the killed pod", f"{f['killedHeld']:,}", SEED["killed"]),
            ("kill: transports closed (clients saw)", f"{f['drops']:,}", SEED["killed"]),
            ("kill: reconnect_failed", f"{f['reconnectFailed']}", SEED["lost"]),
            ("kill: failed attempts (retried)", f"{f['failedAttempts']}", SEED["unreported"]),
            ("kill: seconds until all connected again",
             "not within the deadline" if back is None else f"{back:.1f}", SEED["unreported"]),
            ("kill: peak reconnects /s the survivors took", f"{f['peakReconnectsPerSecond']}",
             SEED["unreported"]),
            ("kill: seconds until the Service dropped the pod",
             "-" if dropped_by is None else f"{dropped_by:.1f}", "-"),
            ("kill: |served - truth| survivors, quiet (max)",
             f"{f['afterKillQuietWorstDiff']} over {f['afterKillQuietSamples']} s",
             SEED["unreported"]),
            ("kill: killed pod left out of the API", "no" if f["killedPodServed"] else "yes", "-"),
            ("kill: seconds the adapter served no pod (404/503)",
             f"{f['unservedSecondsDuringKill']:.0f}", "-"),
        ]  # fmt: skip
    ended, served = f.get("gameEndSeconds"), f.get("gameEndServedSeconds")
    rows += [
        ("game end: every client leaves at once; seconds until the pods hold none",
         "not within 120 s" if ended is None else f"{ended:.1f}", SEED["unreported"]),
        ("game end: seconds until the adapter serves 0 for every pod",
         "not within 120 s" if served is None else f"{served:.1f}", "-"),
    ]  # fmt: skip
    print()
    print(
        f"hold: {r.pods} pods x {r.workers} workers x {r.per_worker:,} = {r.total:,} sockets, "
        f"{r.agents} agents, {os.cpu_count()} CPUs"
    )
    if f.get("unservedWhy"):
        print(f"the adapter's answer when it served no pod: {f['unservedWhy']}")
    if counted := {k: v for k, v in f.get("survivorsCounted", {}).items() if v}:
        print(f"the survivors' own counters after the kill: {counted}")
    print()
    print("| figure | pushscale, this machine | the seed |")
    print("|---|---|---|")
    for name, value, seed in rows:
        print(f"| {name} | {value} | {seed} |")


def hold_failed(r: HoldResult) -> list[str]:
    """What a user would call a failure of this run, in words."""
    f, why = r.figures, []
    if f.get("held") != r.total:
        why.append(f"held {f.get('held')} of {r.total}")
    if f.get("holdQuietWorstDiff") != 0:
        why.append(f"served != truth at quiet moments (worst {f.get('holdQuietWorstDiff')})")
    if "drops" in f:
        if f["reconnectFailed"]:
            why.append(f"{f['reconnectFailed']} clients gave up (reconnect_failed)")
        if f["secondsUntilAllBack"] is None:
            why.append("not every client came back")
        if f["afterKillQuietWorstDiff"] != 0 or f["killedPodServed"]:
            why.append("the adapter was not exact after the kill")
    return why


def print_max(r: MaxResult) -> None:
    f = r.figures
    kb = "{:.1f} KB".format
    rows = [
        ("connections held with 0 errors, total", f"{r.held:,}",
         "~1,500,000 (20 pods x 4 cores, 200/s, until reconnect attempts ran out)"),
        ("per worker (max / min), counted by the workers",
         f"{f['perWorkerMax']:,} / {f['perWorkerMin']:,}",
         "~19,000 (1.5M over 20 pods x 4 pm2 workers)"),
        ("what stopped the ramp", r.stopped_by, "reconnect attempts exhausted"),
        ("ramp seconds", f"{f['rampSeconds']:.0f}", "-"),
        ("memory per connection: pods / clients / kernel slab",
         f"{kb(f['podsBytesPerConnection'] / 1024)} / "
         f"{kb(f['generatorBytesPerConnection'] / 1024)} / "
         f"{kb(f['kernelBytesPerConnection'] / 1024)}", "not reported"),
        ("memory still available at the end", f"{f['availableMemoryBytesAtEnd'] / 1024**3:.1f} GiB",
         "-"),
        ("CPU cores at the end: pods / generator / machine",
         f"{f['lastPodCores']:.2f} / {f['lastGeneratorCores']:.2f} / {f['lastMachineCores']:.2f}",
         "-"),
    ]  # fmt: skip
    print()
    print(
        f"max: {r.pods} pods x {r.workers} workers, at most {r.per_worker:,} a worker, "
        f"{r.rate:g} new a second, {os.cpu_count()} CPUs"
    )
    print()
    print("| figure | pushscale, this machine | the seed |")
    print("|---|---|---|")
    for name, value, seed in rows:
        print(f"| {name} | {value} | {seed} |")


def _cluster_arguments(
    phase: argparse.ArgumentParser, pods: int, per_worker: int, per_worker_help: str
) -> None:
    phase.add_argument("--pods", type=int, default=pods)
    phase.add_argument("--workers", type=int, default=4, help="workers a pod")
    phase.add_argument("--per-worker", type=int, default=per_worker, help=per_worker_help)
    phase.add_argument("--rate", type=float, default=1000, help="new connections a second")
    phase.add_argument("--out", type=Path, default=Path(".run/seed"), help="JSON, PNG and logs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    phases = parser.add_subparsers(dest="phase", required=True)
    p = phases.add_parser("burst", help="open --rate new connections per second for --seconds")
    p.add_argument("--rate", type=float, default=4000, help="new connections per second")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--agents", type=int, default=2, help="at least this many agent processes")
    p.add_argument(
        "--agent-cpu", type=int, default=None, help="pin the agents to this CPU (default: none)"
    )
    h = phases.add_parser("hold", help="ramp pods to --per-worker sockets a worker, then kill one")
    _cluster_arguments(h, pods=4, per_worker=10000, per_worker_help="sockets a worker")
    h.add_argument("--idle-seconds", type=float, default=30, help="idle CPU window")
    h.add_argument("--no-kill", action="store_true", help="skip the pod kill")
    m = phases.add_parser("max", help="ramp until the first error or a limit of the machine")
    _cluster_arguments(m, pods=8, per_worker=19000, per_worker_help="--max-connections a worker")
    m.add_argument("--minutes", type=float, default=10, help="time budget of the ramp")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_exit)
    if args.phase == "burst":
        result = burst(args)
        print_burst(result)
        if result["errors"] or result["server_connected"] != result["opened"]:
            sys.exit(1)
        return
    try:
        enter_private_network()
    except ClusterError as exc:
        raise SystemExit(f"bench.seed {args.phase}: {exc}") from exc
    if args.phase == "max":
        found = max_connections(
            args.pods, args.workers, args.per_worker, args.rate, args.minutes, args.out / "logs"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        document = asdict(found)  # its samples too: asdict recurses
        (args.out / "max.json").write_text(json.dumps(document, indent=1))
        title = f"bench.seed max: {found.pods} pods x {found.workers} workers, {found.rate:g}/s"
        draw(found.samples, found.pods, title, args.out / "max.png")
        print_max(found)
        print(f"\nJSON {args.out / 'max.json'}, timeline {args.out / 'max.png'}")
        return
    held = hold(
        args.pods, args.workers, args.per_worker, args.rate, args.idle_seconds,
        not args.no_kill, args.out / "logs",
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hold.json").write_text(json.dumps(held.to_json(), indent=1))
    title = (
        f"bench.seed hold: {held.pods} pods x {held.workers} workers x {held.per_worker:,}"
        f"{'' if args.no_kill else ', then pod seed-0 SIGKILLed'}"
    )
    draw(held.samples, held.pods, title, args.out / "hold.png")
    print_hold(held)
    print(f"\nJSON {args.out / 'hold.json'}, timeline {args.out / 'hold.png'}")
    if why := hold_failed(held):
        print("FAILED: " + "; ".join(why))
        sys.exit(1)


if __name__ == "__main__":
    main()
