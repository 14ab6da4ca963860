"""`pushscale adapter` wired together: discovery, scrape rounds, access, TLS and the API.

`adapter.cli` calls `serve(settings)`. Everything long-lived starts here and stops here: the
pod discovery (`adapter.discovery`), the scrape loop (`adapter.rounds`), the certificate
watcher (`adapter.tls`) and uvicorn serving `adapter.app` over TLS, until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path

import uvicorn

from adapter import tls
from adapter.access import build_access
from adapter.app import AppState, create_app, logged_report
from adapter.auth import CLIENT_CA, FRONT_PROXY_CA
from adapter.discovery import Discovery, StaticDiscovery, WatchDiscovery
from adapter.errors import StartupError, Unavailable
from adapter.instruments import Instruments
from adapter.kube import KubeApi, KubeError
from adapter.pods import StaticPodsError
from adapter.rounds import Rounds, keep_seconds, spacing_seconds
from adapter.scrape import ScrapeSettings
from adapter.scrapeproc import ProcessScraper
from adapter.settings import AdapterSettings
from pushkit.program import write_ready_file

log = logging.getLogger("pushscale.adapter")

# How often the certificate files are checked for a rotation.
CERT_POLL_SECONDS = 10.0


async def serve(settings: AdapterSettings) -> int:
    kube = _kube_api(settings)
    discovery = _discovery(settings, kube)
    client_cas: dict[str, Path] = {}
    if settings.authentication_skip:
        log.warning(
            # No port number: with --secure-port 0 it is not known yet (the ready file has it).
            "AUTHENTICATION AND AUTHORIZATION ARE OFF (--authentication-skip): anyone who can "
            "reach the metrics API reads every metric. Use this on a laptop only."
        )
        access = None
    else:
        access, client_cas = await build_access(settings, kube)
    server_tls = _server_tls(settings, client_cas)
    instruments = Instruments()
    report = logged_report(log)
    scrape = ScrapeSettings(settings.scrape_timeout_seconds, settings.max_scrape_bytes)
    scraper = ProcessScraper(scrape, settings.log_level)
    try:
        await scraper.start()
    except Unavailable as exc:
        raise StartupError(str(exc)) from None
    # The pod watch runs on a thread; when a rollout floods it with events it holds the GIL for
    # up to the switch interval at a time: 1 ms instead of 5 lets an API request through sooner.
    sys.setswitchinterval(0.001)
    rounds = Rounds(
        scraper,
        discovery,
        interval_seconds=settings.scrape_interval_seconds,
        max_age_seconds=settings.max_value_age_seconds,
        keep_seconds=keep_seconds(settings.rate_window_seconds, settings.scrape_interval_seconds),
        spacing_seconds=spacing_seconds(
            settings.rate_window_seconds, settings.scrape_interval_seconds
        ),
        on_round=lambda finished: instruments.observe_round(finished, report),
    )
    try:
        state = AppState(
            rounds, discovery, instruments, access, settings.rate_window_seconds,
            settings.max_value_age_seconds, report=report,
        )  # fmt: skip
        config = tls.uvicorn_config(
            create_app(state),
            server_tls,
            host=settings.bind_address,
            port=settings.secure_port,
            log_level=settings.log_level,
            # One line per request would drown the log at the HPA's pace times every pod;
            # the request histogram in /metrics counts them by route and code.
            access_log=False,
            log_config=None,  # our handler and format (pushkit.logs), not uvicorn's
        )
        server = _Server(config)
        async with _background(
            server,
            discovery.run(),
            _scrape_when_synced(discovery, rounds),
            tls.watch_files(server_tls, CERT_POLL_SECONDS),
            _announce(server, settings),
        ):
            await server.serve()
    finally:
        # The round in flight first, while this loop still runs to hear of its end; then the
        # scrape process.
        await rounds.stop()
        await scraper.close()
    log.info("stopped")
    return 0


class _Server(uvicorn.Server):
    """uvicorn, except that SIGTERM and SIGINT end a clean shutdown with exit code 0: uvicorn
    re-raises the signal after shutting down, which Kubernetes would log as exit code 143."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def _kube_api(settings: AdapterSettings) -> KubeApi | None:
    """The Kubernetes API, unless nothing needs it (static pods and no authentication)."""
    if settings.static_pods is not None and settings.kubeconfig is None:
        return None
    try:
        return KubeApi.from_config(settings.kubeconfig)
    except KubeError as exc:
        raise StartupError(f"no Kubernetes API: {exc}") from exc


def _discovery(settings: AdapterSettings, kube: KubeApi | None) -> Discovery:
    if settings.static_pods is not None:
        try:
            return StaticDiscovery(Path(settings.static_pods))
        except (OSError, StaticPodsError) as exc:
            raise StartupError(f"--static-pods {settings.static_pods}: {exc}") from exc
    assert kube is not None
    return WatchDiscovery(kube)


def _server_tls(settings: AdapterSettings, client_cas: Mapping[str, Path]) -> tls.ServerTls:
    if settings.tls_cert_file is not None and settings.tls_private_key_file is not None:
        cert, key = Path(settings.tls_cert_file), Path(settings.tls_private_key_file)
    else:
        hosts = ["localhost", "127.0.0.1", socket.gethostname()]
        try:
            cert, key = tls.self_signed_pair(Path(settings.cert_dir), hosts)
        except OSError as exc:
            raise StartupError(f"--cert-dir {settings.cert_dir}: {exc}") from exc
        log.info("serving with a self-signed certificate from %s", settings.cert_dir)
    flags = {
        FRONT_PROXY_CA: ("--requestheader-client-ca-file", settings.requestheader_client_ca_file),
        CLIENT_CA: ("--client-ca-file", settings.client_ca_file),
    }
    for name, path in client_cas.items():
        try:
            ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            flag, value = flags[name]
            origin = (
                f"{flag} {path}"
                if value is not None
                else f"the {name}-file of kube-system/extension-apiserver-authentication"
            )
            raise StartupError(f"{origin}: {exc}") from exc
    try:
        return tls.ServerTls(cert, key, client_cas)
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot load the serving certificate {cert}: {exc}") from exc


async def _scrape_when_synced(discovery: Discovery, rounds: Rounds) -> None:
    await discovery.wait_synced()
    await rounds.run()


async def _announce(server: uvicorn.Server, settings: AdapterSettings) -> None:
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    log.info("serving the custom metrics API on https://%s:%d", settings.bind_address, port)
    if settings.ready_file is not None:
        write_ready_file(settings.ready_file, {"port": port})


@contextlib.asynccontextmanager
async def _background(
    server: uvicorn.Server, *jobs: Coroutine[object, object, None]
) -> AsyncIterator[None]:
    """Run jobs beside the server; one that dies stops the server, so the pod restarts
    instead of serving ever older values."""

    def stop_on_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped: %s", task.get_name(), task.exception())
            server.should_exit = True

    tasks = [asyncio.create_task(job, name=getattr(job, "__name__", "job")) for job in jobs]
    for task in tasks:
        task.add_done_callback(stop_on_failure)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
