"""Rebalancing after a scale-up: which pods shed how many sockets, and the shed requests.

After a scale-up the existing sockets stay where they are and only new ones reach the new pods
(seed section 2), so the old pods stay far above the rest. With `--rebalance`,
`adapter.controller.reconcile` calls `shed_plan` once the new pods all run and are read
exactly, then `ShedClient.send` asks each worker of each pod above the fair share to close its
newest sockets through the push server's authenticated `POST /admin/shed`
(`pushserver.routes`, docs/pushserver.md), paced 5 ms apart as the seed's rebalancing did.
The closed clients reconnect by themselves (a transport close, not a socket.io disconnect) and
the Service spreads them over every ready pod.

`shed_plan`, `split_over_workers` and `shed_requests` are pure; `ShedClient` is the HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx

# A pod may keep this share above the fair share: each socket moved costs its client a
# reconnect, which a 10% imbalance is not worth.
DEFAULT_SLACK = 0.1
# The seed's pacing of a shed: one socket every 5 ms per worker.
SHED_INTERVAL_MS = 5.0


def shed_plan(pods: Mapping[str, float], slack: float = DEFAULT_SLACK) -> dict[str, int]:
    """Pod → sockets to shed: what each pod holds above the fair share, total / pods *
    (1 + slack). A single pod has nobody to shed to."""
    if len(pods) < 2:
        return {}
    limit = sum(pods.values()) / len(pods) * (1 + slack)
    # Rounded first: 25000 * 1.1 is 27500.000000000004 in floats, not a socket less.
    plan = {pod: math.floor(round(value - limit, 6)) for pod, value in sorted(pods.items())}
    return {pod: count for pod, count in plan.items() if count >= 1}


def split_over_workers(count: int, workers: int) -> list[int]:
    """A pod's count over its workers, evenly, the first ones taking the remainder: the custom
    metrics API gives the pod's sum only, and the kernel spreads a pod's sockets evenly over its
    workers (SO_REUSEPORT). A worker asked for more than it holds sheds what it holds."""
    share, rest = divmod(count, workers)
    return [share + (1 if worker < rest else 0) for worker in range(workers)]


@dataclass(frozen=True)
class ShedTarget:
    """Where a pod's workers take shed requests (its IP, `pushscale.io/metrics-port`,
    `pushscale.io/workers`)."""

    pod: str
    ip: str
    metrics_port: int
    workers: int


@dataclass(frozen=True)
class ShedRequest:
    pod: str
    worker: int
    url: str
    count: int


def shed_requests(plan: Mapping[str, int], targets: Mapping[str, ShedTarget]) -> list[ShedRequest]:
    """One request per worker with something to shed; pods without a target are left out."""
    requests = []
    for pod, count in sorted(plan.items()):
        target = targets.get(pod)
        if target is None:
            continue
        host = target.ip
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
        for worker, share in enumerate(split_over_workers(count, target.workers)):
            if share > 0:
                url = f"http://{host}:{target.metrics_port + worker}/admin/shed"
                requests.append(ShedRequest(pod, worker, url, share))
    return requests


@dataclass(frozen=True)
class ShedResult:
    request: ShedRequest
    outcome: str  # accepted, busy, refused, failed
    shedding: int  # sockets the worker will close
    detail: str = ""


class ShedClient:
    """Sends shed requests to workers, all at once (each worker paces itself)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        admin_token: str,
        *,
        interval_ms: float = SHED_INTERVAL_MS,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {admin_token}"}
        self._interval_ms = interval_ms
        self._timeout = timeout_seconds

    async def send(self, requests: Sequence[ShedRequest]) -> list[ShedResult]:
        return list(await asyncio.gather(*(self._send(request) for request in requests)))

    async def _send(self, request: ShedRequest) -> ShedResult:
        body = {"count": request.count, "intervalMs": self._interval_ms}
        try:
            response = await self._client.post(
                request.url, json=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            return ShedResult(request, "failed", 0, f"{type(exc).__name__}: {exc}")
        if response.status_code == 202:
            try:
                shedding = int(response.json()["shedding"])
            except (ValueError, KeyError, TypeError):
                return ShedResult(request, "failed", 0, "202 without a shedding count")
            return ShedResult(request, "accepted", shedding)
        detail = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code == 409:
            return ShedResult(request, "busy", 0, detail)  # already shedding, or draining
        if response.status_code in (401, 403):
            return ShedResult(request, "refused", 0, detail)  # wrong or no admin token
        return ShedResult(request, "failed", 0, detail)
