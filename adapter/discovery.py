"""Which push pods exist: a pod watch in a cluster, a file on a laptop.

The adapter's start-up builds one `Discovery` and runs `run()` as a task for its whole life; the
scrape loop reads `pods()` every round (from memory, never a request), and the metrics API asks
`service()` for a Service's selector. `WatchDiscovery` lists the pods labelled
`pushscale.io/scrape=true` through `adapter.kube`, then watches from the list's
resourceVersion in a worker thread, handing each event to the event loop; `StaticDiscovery`
serves the pods and Services of a file parsed by `adapter.pods.parse_static_pods`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from adapter.kube import JsonObject, KubeApi, KubeError, PodWatch, WatchExpired
from adapter.pods import (
    SCRAPE_LABEL,
    Pod,
    PodError,
    Service,
    StaticPodsError,
    parse_static_pods,
    pod_from_object,
    service_from_object,
)

log = logging.getLogger("pushscale.adapter.discovery")

# How long a stopped watch thread may take to notice; it only has to leave a read on a socket
# that stop() has already shut down.
_THREAD_STOP_SECONDS = 5.0


class Discovery(Protocol):
    def pods(self) -> tuple[Pod, ...]:
        """The current pods, sorted by namespace and name."""
        ...

    async def service(self, namespace: str, name: str) -> Service | None: ...

    async def run(self) -> None:
        """Keep `pods()` current until cancelled."""
        ...

    @property
    def synced(self) -> bool: ...

    async def wait_synced(self) -> None: ...


def _discard(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _key(metadata: Mapping[str, Any]) -> tuple[str, str]:
    return (str(metadata.get("namespace") or "default"), str(metadata.get("name")))


def _sorted(pods: Mapping[tuple[str, str], Pod]) -> tuple[Pod, ...]:
    return tuple(pod for _, pod in sorted(pods.items()))


class StaticDiscovery:
    """The laptop: pods and Services from a file, read and checked once at start-up."""

    def __init__(self, path: str | Path) -> None:
        try:
            inventory = parse_static_pods(Path(path).read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise StaticPodsError(f"{path}: cannot read: {exc}") from exc
        except StaticPodsError as exc:
            raise StaticPodsError(f"{path}: {exc}") from exc
        self._pods = _sorted({pod.key: pod for pod in inventory.pods})
        self._services = {(s.namespace, s.name): s for s in inventory.services}

    def pods(self) -> tuple[Pod, ...]:
        return self._pods

    async def service(self, namespace: str, name: str) -> Service | None:
        return self._services.get((namespace, name))

    async def run(self) -> None:
        await asyncio.Event().wait()

    @property
    def synced(self) -> bool:
        return True

    async def wait_synced(self) -> None:
        return None


def backoff_seconds(failures: int, first: float, cap: float) -> float:
    """Doubling from `first` on each failure in a row, never above `cap`."""
    # The exponent is capped too: 2.0 ** 1024 overflows, long after the cap is reached.
    return min(cap, first * 2.0 ** min(max(0, failures - 1), 60))


class WatchDiscovery:
    """The cluster: list, then watch, the pods carrying the scrape label.

    A watch that expires (410) means events were lost, so everything is listed again and
    replaced. Other failures are retried with a doubling backoff, resuming the watch from the
    last version seen, as client-go's reflector does.
    """

    def __init__(
        self,
        api: KubeApi,
        label_selector: str = f"{SCRAPE_LABEL}=true",
        *,
        watch_timeout_seconds: int = 30,
        backoff_first_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        service_cache_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._selector = label_selector
        self._watch_timeout = watch_timeout_seconds
        self._backoff = (backoff_first_seconds, backoff_max_seconds)
        self._service_ttl = service_cache_seconds
        self._clock = clock
        self._pods: dict[tuple[str, str], Pod] = {}
        self._sorted: tuple[Pod, ...] | None = ()
        self._services: dict[tuple[str, str], tuple[float, Service | None]] = {}
        # (namespace, name) → the resourceVersion whose bad annotations were logged.
        self._reported: dict[tuple[str, str], str] = {}
        self._synced = asyncio.Event()
        # Where the next watch starts; None until listed, and after a 410 until listed again.
        self.resource_version: str | None = None
        self.lists = 0  # successful lists, the first one included

    def pods(self) -> tuple[Pod, ...]:
        if self._sorted is None:
            self._sorted = _sorted(self._pods)
        return self._sorted

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def service(self, namespace: str, name: str) -> Service | None:
        """The Service, from a cache of `service_cache_seconds`; raises `KubeError`."""
        key = (namespace, name)
        now = self._clock()
        cached = self._services.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        obj = await self._api.read_service(namespace, name)
        service = None if obj is None else service_from_object(obj)
        self._services[key] = (now + self._service_ttl, service)
        return service

    async def run(self) -> None:
        failures = 0
        expired_in_a_row = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
            except WatchExpired as exc:
                self.resource_version = None
                expired_in_a_row += 1
                log.info("pod watch expired, listing again: %s", exc)
                # A server that expires every fresh list would make this a busy loop.
                if expired_in_a_row > 1:
                    await asyncio.sleep(backoff_seconds(expired_in_a_row - 1, *self._backoff))
                continue
            except KubeError as exc:
                failures += 1
                delay = backoff_seconds(failures, *self._backoff)
                step = "listing pods" if self.resource_version is None else "watching pods"
                log.warning(
                    "%s failed (%d in a row), retrying in %g s: %s", step, failures, delay, exc
                )
                await asyncio.sleep(delay)
                continue
            failures = expired_in_a_row = 0

    async def _list(self) -> None:
        items, version = await self._api.list_pods(self._selector)
        pods = {}
        for obj in items:
            if pod := self._pod(obj):
                pods[pod.key] = pod
        self._pods = pods
        self._sorted = None
        listed = {_key(obj.get("metadata") or {}) for obj in items}
        self._reported = {key: v for key, v in self._reported.items() if key in listed}
        self.resource_version = version
        self.lists += 1
        if not self._synced.is_set():
            log.info("pods listed: %d with %s", len(pods), self._selector)
        self._synced.set()

    async def _watch(self) -> None:
        assert self.resource_version is not None
        watch = self._api.watch_pods(self._selector, self.resource_version, self._watch_timeout)
        loop = asyncio.get_running_loop()
        pump = asyncio.ensure_future(asyncio.to_thread(self._pump, watch, loop))
        try:
            await asyncio.shield(pump)
        except asyncio.CancelledError:
            watch.stop()
            # The thread's own end (an error from the shut socket, if any) is of no interest now.
            pump.add_done_callback(_discard)
            # Wait for the thread so nothing of this discovery outlives its task.
            await asyncio.wait([pump], timeout=_THREAD_STOP_SECONDS)
            raise

    def _pump(self, watch: PodWatch, loop: asyncio.AbstractEventLoop) -> None:
        """The watch thread: every event goes to the event loop, in order."""
        for event_type, obj in watch:
            if watch.stopped:
                return
            loop.call_soon_threadsafe(self._apply, event_type, obj)

    def _apply(self, event_type: str, obj: JsonObject) -> None:
        metadata: Mapping[str, Any] = obj.get("metadata") or {}
        if version := metadata.get("resourceVersion"):
            self.resource_version = str(version)
        if event_type == "BOOKMARK":
            return
        key = _key(metadata)
        if event_type == "DELETED":
            self._pods.pop(key, None)
            self._reported.pop(key, None)
        elif event_type in ("ADDED", "MODIFIED"):
            pod = self._pod(obj)
            if pod is None:
                self._pods.pop(key, None)
            else:
                self._pods[key] = pod
        else:
            log.debug("pod watch: ignored a %s event", event_type)
            return
        self._sorted = None

    def _pod(self, obj: JsonObject) -> Pod | None:
        try:
            return pod_from_object(obj)
        except PodError as exc:
            metadata = obj.get("metadata") or {}
            key = _key(metadata)
            version = str(metadata.get("resourceVersion"))
            if self._reported.get(key) != version:
                self._reported[key] = version
                log.warning("pod left out: %s", exc)
            return None
