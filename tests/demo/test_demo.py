"""`pushscale demo` end to end: the real command as a subprocess, its real children (Redis, two
push server supervisors with their workers, the adapter over TLS, the load generator), real
sockets. Checked from the outside: what it prints, that the adapter's per-pod values equal the
viewers' own counts, that its curl lines work, and that it leaves no process behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pushkit.options import SettingsError
from pushscale.demo.board import PodView, Snapshot, line, scenario_target
from pushscale.demo.settings import parse_settings
from pushscale.loadgen import LoadStatus
from tests.conftest import ROOT, free_port_block

REFRESH = re.compile(
    r"t=(?P<t>\d+)s .*? target (?P<target>\d+) \| (?P<pods>.*) \| "
    r"total adapter=(?P<adapter>\d+) clients=(?P<clients>\d+)$"
)
POD = re.compile(
    r"(?P<name>demo-[ab]) adapter=(?P<adapter>\d+|-) clients=(?P<clients>\d+) "
    r"(?P<verdict>\S+) workers=(?P<workers>[\d,-]+)"
)


def refresh(text: str) -> dict[str, Any] | None:
    """A refresh line as numbers: per pod the adapter's value, the viewers' count, the workers."""
    found = REFRESH.search(text)
    if found is None:
        return None
    pods = {}
    for part in found["pods"].split(" | "):
        pod = POD.fullmatch(part)
        assert pod is not None, f"unparsable pod in {text!r}"
        pods[pod["name"]] = {
            "adapter": None if pod["adapter"] == "-" else int(pod["adapter"]),
            "clients": int(pod["clients"]),
            "match": pod["verdict"] == "match",
            "workers": [None if w == "-" else int(w) for w in pod["workers"].split(",")],
        }
    return {"t": int(found["t"]), "target": int(found["target"]), "pods": pods,
            "clients": int(found["clients"]), "adapter": int(found["adapter"])}  # fmt: skip


def exact(r: dict[str, Any] | None, clients: int | None = None) -> bool:
    """Both pods served, equal to the viewers' counts, each the sum of its 4 workers."""
    if r is None or set(r["pods"]) != {"demo-a", "demo-b"}:
        return False
    if clients is not None and r["clients"] != clients:
        return False
    return r["clients"] > 0 and all(
        p["match"] and len(p["workers"]) == 4 and sum(p["workers"]) == p["adapter"]
        for p in r["pods"].values()
    )


class Demo:
    """One `pushscale demo` subprocess, its stdout read line by line as it comes."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.run_dir = run_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pushscale.cli", "demo", "--run-dir", str(run_dir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for text in self.process.stdout:
            with self._changed:
                self.lines.append(text.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(
        self, check: Callable[[str], bool], what: str, timeout: float = 40, after: int = 0
    ) -> int:
        """The index of the first line from `after` on that passes `check`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    if check(self.lines[index]):
                        return index
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"demo exited before {what}:\n{self.output()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {what} in {timeout} s:\n{self.output()}")
                self._changed.wait(0.2)

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        code = self.process.wait(timeout)
        self._reader.join(5)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def output(self) -> str:
        return "\n".join(self.lines[-40:])

    def pids(self) -> list[int]:
        document = json.loads((self.run_dir / "pids.json").read_text())
        return [pid for pids in document["processes"].values() for pid in pids]

    def kill_leftovers(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        with contextlib.suppress(OSError, ValueError):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def left_behind(demo: Demo) -> list[str]:
    """Processes of this demo still running: by recorded pid, or naming its run directory."""
    left = [f"pid {pid}" for pid in demo.pids() if running(pid)]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if str(demo.run_dir) in command and running(int(entry.name)):
                    left.append(f"pid {entry.name}: {command}")
    return left


@pytest.fixture
def demos(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(tmp_path / f"run{len(started)}", *args)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.kill_leftovers()


FAST = ("--client-port", "0", "--adapter-port", "0", "--drain-seconds", "2")


@pytest.mark.slow
def test_live_counts_are_exact_the_curl_lines_work_and_ctrl_c_stops_everything(demos) -> None:
    metrics = free_port_block(8)
    demo = demos(
        "--clients", "200", "--duration", "40", "--metrics-port", str(metrics), *FAST,
        # Moves every 3 s, and viewers back within a second, so a short run sees both moves.
        "--move-every", "3", "--reconnect-delay", "0.5", "--reconnect-delay-max", "1",
    )  # fmt: skip
    first = demo.wait_for(lambda t: exact(refresh(t), 200), "an exact refresh with 200 viewers")
    text = "\n".join(demo.lines)
    assert f"metrics http://127.0.0.1:{metrics}-{metrics + 3}/metrics" in text  # demo-a
    assert f"metrics http://127.0.0.1:{metrics + 4}-{metrics + 7}/metrics" in text  # demo-b

    curls = [shlex.split(t.split("]", 1)[1]) for t in demo.lines if "curl -s --cacert" in t]
    assert len(curls) == 3, text
    for curl in curls:
        assert curl[:3] == ["curl", "-s", "--cacert"] and Path(curl[3]).is_file()
    context = ssl.create_default_context(cafile=curls[0][3])
    pods = httpx.get(curls[0][4], verify=context, timeout=5)
    assert pods.status_code == 200, pods.text
    assert pods.json()["kind"] == "MetricValueList"
    items = {i["describedObject"]["name"]: int(i["value"]) for i in pods.json()["items"]}
    assert set(items) == {"demo-a", "demo-b"} and sum(items.values()) <= 200
    deployment = httpx.get(curls[1][4], verify=context, timeout=5)
    assert deployment.status_code == 200 and deployment.json()["items"][0]["value"]
    debug = httpx.get(curls[2][4], verify=context, timeout=5)
    assert debug.status_code == 200 and "demo-b" in debug.text and "worker 3" in debug.text

    # Both moves happen, and the counts are exact again after them.
    shed = demo.wait_for(lambda t: "move 1: shed" in t, "the shed move", after=first)
    churn = demo.wait_for(lambda t: "move 2:" in t, "the churn move", after=shed)
    demo.wait_for(lambda t: exact(refresh(t), 200), "an exact refresh after the moves",
                  after=churn)  # fmt: skip

    demo.process.send_signal(signal.SIGINT)
    code, errors = demo.finish()
    output = "\n".join(demo.lines)
    assert code == 0, f"{errors}\n{output}"
    assert "SIGINT: stopping" in output and "everything stopped" in output
    assert re.search(r"push servers stopped \(exit 0, 0\); viewers connected: \d+ before, 0 after",
                     output), output  # fmt: skip
    assert "adapter stopped (exit 0)" in output and "Redis stopped" in output
    assert re.search(r"summary: \d+ viewers connected at the last refresh", output)
    assert left_behind(demo) == []


@pytest.mark.slow
def test_a_scenario_replay_follows_the_users_down(demos) -> None:
    demo = demos(
        "--clients", "200", "--scenario", "game-end", "--speed", "60", "--duration", "12",
        "--metrics-port", "0", *FAST,
    )  # fmt: skip
    code, errors = demo.finish(90)
    assert code == 0, f"{errors}\n{demo.output()}"
    refreshes = [r for r in map(refresh, demo.lines) if r is not None]
    assert any("replaying game-end" in t for t in demo.lines)
    # game-end holds 150k for 300 s (5 s at 60x), then falls to 10k by 900 s (15 s).
    early = [r for r in refreshes if r["t"] <= 4]
    late = [r for r in refreshes if r["t"] >= 11]
    assert early and late, demo.output()
    assert max(r["target"] for r in early) >= 190
    assert max(r["clients"] for r in late) < 0.6 * max(r["clients"] for r in early)
    assert any(exact(r) for r in refreshes if r["t"] >= 7), demo.output()
    assert left_behind(demo) == []


def test_a_taken_port_is_one_line_exit_1_and_nothing_left(demos) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = demos("--client-port", str(port), "--metrics-port", "0", "--adapter-port", "0")
        code, errors = demo.finish()
    assert code == 1, demo.output()
    lines = errors.strip().splitlines()
    assert len(lines) == 1, errors
    assert lines[0].startswith("pushscale demo: cannot start: push server demo-a: ")
    assert "in use" in lines[0]
    assert left_behind(demo) == []


def test_ctrl_c_while_starting_leaves_nothing(demos) -> None:
    demo = demos("--metrics-port", "0", *FAST)
    demo.wait_for(lambda t: "starting push servers" in t, "the push servers starting")
    time.sleep(0.5)  # the supervisors are spawning workers; none is ready for seconds
    demo.process.send_signal(signal.SIGINT)
    code, errors = demo.finish()
    assert code == 0, f"{errors}\n{demo.output()}"
    assert "killing demo-a, which was still starting" in demo.output()
    assert "everything stopped" in demo.output()
    assert left_behind(demo) == []


@pytest.mark.slow
def test_a_program_dying_mid_run_is_one_line_exit_1_and_nothing_left(demos) -> None:
    demo = demos("--clients", "50", "--metrics-port", "0", *FAST)
    demo.wait_for(lambda t: refresh(t) is not None, "a refresh")
    adapter = json.loads((demo.run_dir / "pids.json").read_text())["processes"]["adapter"][0]
    os.kill(adapter, signal.SIGKILL)
    code, errors = demo.finish()
    assert code == 1, demo.output()
    assert errors.strip().splitlines() == [
        f"pushscale demo: the adapter exited (killed by SIGKILL; log: {demo.run_dir}/adapter.log)"
    ]
    assert "push servers stopped (exit 0, 0)" in demo.output()
    assert left_behind(demo) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--clients", "0"], "--clients must be from 1"),
        (["--client-port", "9101"], "--client-port and --metrics-port overlap on port 9101"),
        (["--metrics-port", "6440"], "--metrics-port and --adapter-port overlap on port 6443"),
        (["--scenario", "nope"], "not one of seed-autoscale"),
        (["--reconnect-delay", "30"], "--reconnect-delay <= --reconnect-delay-max"),
        (["--client-port", "65535"], "needs ports 65535-65536"),
    ],
    ids=["no-clients", "client-in-metrics", "metrics-over-adapter", "unknown-scenario",
         "delay-above-max", "past-last-port"],
)  # fmt: skip
def test_bad_settings_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        parse_settings(args, {})


def test_settings_lay_out_the_ports_of_both_pods() -> None:
    plan = parse_settings(["--client-port", "4000", "--metrics-port", "9200"], {}).plan()
    assert plan.client_ports == (4000, 4001)
    assert plan.metrics_ports == (9200, 9204)
    assert parse_settings(
        ["--client-port", "0", "--metrics-port", "0"], {}
    ).plan().client_ports == (
        0,
        0,
    )
    assert parse_settings(["--clients", "20000"], {}).plan().agents == 3


@pytest.mark.parametrize(
    ("users", "clients", "speed", "elapsed", "expected"),
    [
        ([100, 200, 50], 1000, 1, 0, 500),
        ([100, 200, 50], 1000, 1, 1.5, 1000),
        ([100, 200, 50], 1000, 1, 99, 250),  # over: the last value holds
        ([0.0] * 10 + [10.0] * 10, 7, 10, 1, 7),  # time compressed: second 10
        ([0.0, 0.0], 100, 1, 0, 0),
    ],
    ids=["start", "peak-is-clients", "after-the-end", "speed", "no-users"],
)
def test_scenario_target(users, clients, speed, elapsed, expected) -> None:
    assert scenario_target(users, clients, speed, elapsed) == expected


def test_the_refresh_line_parses_back() -> None:
    snapshot = Snapshot(
        3.2, 10, LoadStatus({3000: 6, 3001: 4}),
        (PodView("demo-a", 6, 6, None, (1, 2, 3, 0)), PodView("demo-b", 4, 5, None, (5, 0, 0, 0))),
        round_number=4, round_age_seconds=0.2,
    )  # fmt: skip
    parsed = refresh(line(snapshot))
    assert parsed is not None
    assert parsed["pods"]["demo-a"] == {"adapter": 6, "clients": 6, "match": True,
                                        "workers": [1, 2, 3, 0]}  # fmt: skip
    assert parsed["pods"]["demo-b"]["match"] is False
    assert (parsed["adapter"], parsed["clients"]) == (11, 10)
