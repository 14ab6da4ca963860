"""`pushscale controller` / `python -m adapter.controller`: settings, then the controller's life.

Called by `pushscale.cli` and `adapter.controller.__main__`. `run` wires the pieces: the
Kubernetes API (`adapter.kube`), the controller's /metrics (`instruments`), the Lease
(`lease.LeaderElector`) and, while it is held, the sync loop (`reconcile.Reconciler`, with a
`rebalance.ShedClient` under `--rebalance`). It lives until SIGTERM or SIGINT (exit 0, the
Lease released so a standby takes over at once) or until the Lease is lost (exit 1 after one
line: a controller that may no longer be the only one must stop, as client-go's leader
election makes its callers do; the Deployment restarts it as a standby).

Exit codes: 0 stopped by a signal, 1 start-up failure or leadership lost, 2 bad flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Sequence

import httpx

from adapter.controller.instruments import Instruments
from adapter.controller.lease import LeaderElector, LeadershipLost
from adapter.controller.rebalance import ShedClient
from adapter.controller.reconcile import Reconciler
from adapter.controller.settings import ControllerSettings, parse_settings
from adapter.errors import StartupError
from adapter.kube import KubeApi, KubeError
from pushkit.program import run_program

log = logging.getLogger("pushscale.controller")

EXIT_LOST = 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_program(
        "pushscale controller", argv, parse_settings, run,
        log_name=lambda _: "controller", startup_errors=(StartupError,),
    )  # fmt: skip


def identity() -> str:
    """Who holds the Lease: the pod's name (its hostname) and the process, as client-go's
    hostname + unique suffix, so a restarted container is a new holder."""
    return f"{socket.gethostname()}_{os.getpid()}"


async def run(
    settings: ControllerSettings,
    *,
    kube: KubeApi | None = None,
    holder: str | None = None,
    stopped: asyncio.Event | None = None,
) -> int:
    """The controller until `stopped` (default: SIGTERM or SIGINT) or the Lease is lost."""
    api = kube or _kube_api(settings)
    holder = holder or identity()
    instruments = Instruments()
    try:
        server, _ = instruments.serve(settings.metrics_port, settings.metrics_bind_address)
    except OSError as exc:
        raise StartupError(f"--metrics-port {settings.metrics_port}: {exc.strerror}") from exc
    log.info(
        "serving metrics on http://%s:%d/metrics%s",
        settings.metrics_bind_address,
        server.server_port,
        "; DRY RUN: deciding and reporting only" if settings.dry_run else "",
    )
    elector = LeaderElector(
        api,
        settings.lease_namespace,
        settings.lease_name,
        holder,
        settings.lease_timing,
        on_change=instruments.set_leader,
    )
    try:
        async with _signals(stopped) as stop, _shed_client(settings) as shed:
            reconciler = Reconciler(
                api, settings, instruments, identity=holder, leading=elector.leading, shed=shed
            )
            async with _heartbeat(instruments):
                await elector.lead(reconciler.run, stop)
    except LeadershipLost as exc:
        log.error("leadership lost, exiting: %s", exc)
        return EXIT_LOST
    finally:
        server.shutdown()
        server.server_close()
        if kube is None:
            api.close()
    log.info("stopped")
    return 0


@contextlib.asynccontextmanager
async def _heartbeat(instruments: Instruments) -> AsyncIterator[None]:
    """Beat every second while the controller runs: /healthz fails when the loop stops."""

    async def beat() -> None:
        while True:
            instruments.beat()
            await asyncio.sleep(1.0)

    task = asyncio.create_task(beat(), name="controller-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _kube_api(settings: ControllerSettings) -> KubeApi:
    try:
        return KubeApi.from_config(settings.kubeconfig)
    except KubeError as exc:
        raise StartupError(f"no Kubernetes API: {exc}") from exc


@contextlib.asynccontextmanager
async def _signals(stopped: asyncio.Event | None) -> AsyncIterator[asyncio.Event]:
    """`stopped`, or an event that SIGTERM and SIGINT set."""
    if stopped is not None:
        yield stopped
        return
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    try:
        yield event
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@contextlib.asynccontextmanager
async def _shed_client(settings: ControllerSettings) -> AsyncIterator[ShedClient | None]:
    if not settings.rebalance or not settings.admin_token:
        yield None
        return
    # Push pods are reached directly by IP, never through a proxy from the environment.
    async with httpx.AsyncClient(trust_env=False) as client:
        yield ShedClient(client, settings.admin_token)
