"""What `pushscale demo` shows (pure): the live table, its one-line form, the summary, the
curl lines, and the client count a replayed scenario asks for at a moment.

`pushscale.demo.live` takes a `Snapshot` each refresh (the adapter's answers and what the viewers
say, `pushscale.loadgen.LoadStatus`) and prints `frame` on a terminal or `line` otherwise;
`Tally` keeps what the summary needs. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pushscale.loadgen import LoadStatus

API_GROUP_PATH = "/apis/custom.metrics.k8s.io/v1beta2"
METRIC = "socket_io_connected"


@dataclass(frozen=True)
class PodView:
    """One push server pod, as the adapter serves it and as its viewers count it."""

    name: str
    clients: int  # connected viewers on this pod's port, as the viewers themselves know
    adapter: int | None = None  # the metrics API's value (the HPA's view); None: not served
    reason: str | None = None  # why not served
    workers: tuple[int | None, ...] = ()  # per worker, from the adapter's debug view

    @property
    def matched(self) -> bool:
        return self.adapter is not None and self.adapter == self.clients


@dataclass(frozen=True)
class Snapshot:
    elapsed_seconds: float
    target: int
    load: LoadStatus
    pods: tuple[PodView, ...]
    round_number: int | None = None
    round_age_seconds: float | None = None
    adapter_error: str | None = None

    @property
    def answered(self) -> bool:
        return self.adapter_error is None and any(p.adapter is not None for p in self.pods)

    @property
    def matched(self) -> bool:
        return bool(self.pods) and all(p.matched for p in self.pods)

    @property
    def clients(self) -> int:
        return sum(p.clients for p in self.pods)


def scenario_target(users: Sequence[float], clients: int, speed: float, elapsed: float) -> int:
    """Viewers to hold `elapsed` seconds into a replay: the scenario's users at `elapsed *
    speed`, scaled so that its peak is `clients`; its last value once it is over."""
    peak = max(users) if users else 0.0
    if peak <= 0:
        return 0
    second = min(len(users) - 1, max(0, int(elapsed * speed)))
    return round(users[second] * clients / peak)


def api_urls(port: int) -> list[str]:
    base = f"https://127.0.0.1:{port}"
    api = f"{base}{API_GROUP_PATH}/namespaces/default"
    return [
        f"{api}/pods/*/{METRIC}?labelSelector=app%3Dpush",
        f"{api}/deployments.apps/push/{METRIC}",
        f"{base}/debug/pods",
    ]


def curl_lines(cert: Path, port: int) -> list[str]:
    return [f"curl -s --cacert {shlex.quote(str(cert))} '{url}'" for url in api_urls(port)]


def _value(value: int | None) -> str:
    return "-" if value is None else str(value)


def _verdict(pod: PodView) -> str:
    if pod.adapter is None:
        return "left out"
    difference = pod.adapter - pod.clients
    return "yes" if difference == 0 else f"no ({difference:+d})"


def _round(snapshot: Snapshot) -> str:
    if snapshot.adapter_error is not None:
        return f"adapter: {snapshot.adapter_error}"
    if snapshot.round_number is None:
        return "adapter: no round yet"
    age = snapshot.round_age_seconds or 0.0
    return f"adapter round {snapshot.round_number} ({age:.1f} s old)"


def frame(snapshot: Snapshot, note: str, curls: Sequence[str], run_dir: Path) -> list[str]:
    """The live table for a terminal."""
    load = snapshot.load
    lines = [
        f"pushscale demo · {snapshot.elapsed_seconds:.0f} s · viewers {snapshot.clients} "
        f"connected of {snapshot.target} wanted · {_round(snapshot)} · Ctrl-C stops",
        "",
        f"{'pod':<8} {'adapter (HPA view)':>18} {'viewers say':>12}  {'equal':<9} "
        "per worker (adapter's debug view)",
    ]
    for pod in snapshot.pods:
        workers = "  ".join(f"w{i} {_value(v):>5}" for i, v in enumerate(pod.workers))
        lines.append(f"{pod.name:<8} {_value(pod.adapter):>18} {pod.clients:>12}  "
                     f"{_verdict(pod):<9} {workers}")  # fmt: skip
        if pod.reason:
            lines.append(f"{'':<8} left out: {pod.reason}")
    adapter_total = sum(p.adapter or 0 for p in snapshot.pods)
    lines += [
        f"{'total':<8} {adapter_total:>18} {snapshot.clients:>12}",
        "",
        f"viewers: connecting {load.connecting} · waiting to reconnect {load.waiting} · "
        f"connects {load.connects} · reconnects {load.reconnects} · failed attempts "
        f"{load.failures}" + (f" (last: {load.last_error})" if load.last_error else ""),
        note,
        "",
        "the custom metrics API, as the HPA reads it (self-signed TLS, hence --cacert):",
        *(f"  {curl}" for curl in curls),
        f"logs, pods file, certificate, pids: {run_dir}/",
    ]
    return lines


def line(snapshot: Snapshot) -> str:
    """One refresh as one line, for a log or a pipe."""
    parts = [f"t={snapshot.elapsed_seconds:.0f}s {_round(snapshot)} target {snapshot.target}"]
    for pod in snapshot.pods:
        workers = ",".join(_value(v) for v in pod.workers)
        verdict = "match" if pod.matched else _verdict(pod).replace(" ", "")
        parts.append(f"{pod.name} adapter={_value(pod.adapter)} clients={pod.clients} "
                     f"{verdict} workers={workers or '-'}")  # fmt: skip
    adapter_total = sum(p.adapter or 0 for p in snapshot.pods)
    parts.append(f"total adapter={adapter_total} clients={snapshot.clients}")
    return " | ".join(parts)


@dataclass
class Tally:
    """What the summary says: refreshes answered, how many matched, the last one."""

    refreshes: int = 0
    matched: int = 0
    moves: int = 0
    rounds: set[int] = field(default_factory=set)
    last: Snapshot | None = None

    def add(self, snapshot: Snapshot) -> None:
        self.last = snapshot
        if snapshot.round_number is not None:
            self.rounds.add(snapshot.round_number)
        if snapshot.answered:
            self.refreshes += 1
            self.matched += snapshot.matched


def summary(tally: Tally, elapsed_seconds: float) -> str:
    last = tally.last
    if last is None:
        return f"summary: stopped after {elapsed_seconds:.0f} s, before the first refresh."
    load = last.load
    pods = ", ".join(f"{p.name} {_value(p.adapter)} (viewers say {p.clients})" for p in last.pods)
    last_round = f"round {last.round_number}" if last.round_number is not None else "no round"
    verdict = "matched" if last.matched else "did not match"
    moves = f"{tally.moves} move" + ("" if tally.moves == 1 else "s")
    return (
        f"summary: {last.clients} viewers connected at the last refresh (target {last.target}; "
        f"{load.connects} connects, {load.reconnects} of them reconnects, {load.failures} "
        f"failed attempts) over {elapsed_seconds:.0f} s with {moves}. The adapter "
        f"answered {tally.refreshes} refreshes from {len(tally.rounds)} scrape rounds; its "
        f"per-pod values equalled the viewers' own counts at {tally.matched} of them. Last "
        f"refresh ({last_round}): {pods}: {verdict}."
    )
