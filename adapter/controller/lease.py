"""Active-passive leadership over a coordination.k8s.io/v1 Lease, as client-go's leaderelection.

`adapter.controller.cli` runs `LeaderElector.lead(work, stopped)`: standby until the Lease is
ours, then the reconcile loop (`work`) beside the renewals, until SIGTERM (the Lease is released,
so a standby takes over at once) or until leadership is lost (`LeadershipLost`: the work is
cancelled first, and the program exits non-zero, as client-go's `OnStoppedLeading` callers do).
`adapter.controller.reconcile` asks `leading()` before every write, so nothing is written by a
controller whose lease may have passed to another.

The rules, client-go's:
- the Lease is free when it has no holder, or when its record has not changed for its
  `leaseDurationSeconds` by *our* clock (the time we first saw that record, never its
  `renewTime`: the clocks of two machines need not agree);
- acquiring and renewing are a PUT with the resourceVersion read, so of two candidates only
  one wins (the other gets 409 Conflict); creating races the same way (409 AlreadyExists);
- the holder renews every retry period and gives up once it has not renewed for the renew
  deadline (10 s), which is shorter than the lease (15 s): by the time anyone else may take
  the Lease, this controller has already stopped acting.

The record arithmetic (`LeaseRecord`, `Observed`, `next_lease`, `released_lease`) is pure;
`LeaderElector` is the shell that reads and writes through `adapter.kube`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from adapter.kube import JsonObject, KubeError

log = logging.getLogger("pushscale.controller.lease")


@dataclass(frozen=True)
class LeaseTiming:
    # client-go's (and kube-controller-manager's --leader-elect-*) defaults.
    lease_duration_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_seconds < self.renew_deadline_seconds:
            raise ValueError("the retry period must be above 0 and below the renew deadline")
        if self.renew_deadline_seconds >= self.lease_duration_seconds:
            raise ValueError(
                "the renew deadline must be below the lease duration: a leader must stop before "
                "another candidate may take the lease"
            )


class LeadershipLost(Exception):
    """The Lease went to another holder, or could not be renewed within the renew deadline."""


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" when nobody holds it
    duration_seconds: float
    transitions: int
    acquire_time: str | None
    renew_time: str | None
    resource_version: str


def record_of(lease: Mapping[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    metadata = lease.get("metadata") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        resource_version=str(metadata.get("resourceVersion") or ""),
    )


@dataclass(frozen=True)
class Observed:
    """A record, and when (our monotonic clock) we first saw it in that state."""

    record: LeaseRecord
    at: float

    def then(self, record: LeaseRecord, now: float) -> Observed:
        """What we know after reading `record` at `now`: an unchanged record keeps its time."""
        return self if record == self.record else Observed(record, now)

    def expired(self, now: float) -> bool:
        return now >= self.at + self.record.duration_seconds

    def held_by_other(self, identity: str, now: float) -> bool:
        holder = self.record.holder
        return holder not in ("", identity) and not self.expired(now)


def micro_time(timestamp: float) -> str:
    """`metav1.MicroTime` as it marshals: RFC 3339 with microseconds, UTC."""
    seconds, micros = divmod(round(timestamp * 1_000_000), 1_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{micros:06d}Z"


def next_lease(
    namespace: str,
    name: str,
    identity: str,
    duration_seconds: float,
    wall: float,
    previous: LeaseRecord | None,
) -> JsonObject:
    """The Lease that says `identity` holds it as of `wall`: a renewal keeps the acquire time
    and the transition count, an acquisition counts one more transition (client-go's rule)."""
    now = micro_time(wall)
    renewing = previous is not None and previous.holder == identity
    metadata: JsonObject = {"name": name, "namespace": namespace}
    if previous is not None:
        metadata["resourceVersion"] = previous.resource_version
    transitions = 0 if previous is None else previous.transitions + (0 if renewing else 1)
    acquired = previous.acquire_time if renewing and previous is not None else None
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": round(duration_seconds),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        },
    }


def released_lease(namespace: str, name: str, wall: float, previous: LeaseRecord) -> JsonObject:
    """The Lease given up: no holder, a 1 s duration, as client-go's ReleaseOnCancel writes it,
    so a standby takes over at its next try instead of waiting out the lease."""
    now = micro_time(wall)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": previous.resource_version,
        },
        "spec": {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": previous.transitions,
        },
    }


class LeaseApi(Protocol):
    """What `LeaderElector` needs of `adapter.kube.KubeApi`."""

    async def read_lease(self, namespace: str, name: str) -> JsonObject | None: ...

    async def create_lease(self, namespace: str, lease: JsonObject) -> JsonObject: ...

    async def replace_lease(self, namespace: str, name: str, lease: JsonObject) -> JsonObject: ...


class LeaderElector:
    def __init__(
        self,
        api: LeaseApi,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._api = api
        self.namespace, self.name, self.identity = namespace, name, identity
        self.timing = timing or LeaseTiming()
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._on_change = on_change
        self._observed: Observed | None = None
        self._renewed_at: float | None = None  # our clock, at the last successful write
        self._last_error = ""
        self._taken_by: str | None = None

    def leading(self) -> bool:
        """Ours, renewed within the renew deadline: safe to act."""
        renewed = self._renewed_at
        return renewed is not None and (
            self._clock() - renewed < self.timing.renew_deadline_seconds
        )

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when the Lease is ours after it. Never raises a KubeError."""
        was_leading = self._renewed_at is not None
        try:
            return await self._attempt()
        except KubeError as exc:
            self._last_error = str(exc)
            if exc.status == 409:
                log.debug("lease %s/%s: lost a race: %s", self.namespace, self.name, exc)
            else:
                level = logging.WARNING if was_leading else logging.DEBUG
                log.log(level, "lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def acquire(self) -> None:
        """Standby until the Lease is ours."""
        log.info("waiting for the lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not await self.try_acquire_or_renew():
            await self._sleep(self.timing.retry_period_seconds)

    async def keep(self) -> NoReturn:
        """Renew every retry period; raise `LeadershipLost` when another holds the Lease, or
        when no renewal succeeded within the renew deadline."""
        while True:
            await self._sleep(self.timing.retry_period_seconds)
            if await self.try_acquire_or_renew():
                continue
            if self._taken_by is not None:
                self._lose(f"the lease {self.namespace}/{self.name} is held by {self._taken_by}")
            if not self.leading():
                self._lose(
                    f"the lease {self.namespace}/{self.name} was not renewed for "
                    f"{self.timing.renew_deadline_seconds:g} s: {self._last_error}"
                )

    async def release(self) -> None:
        """Give the Lease up if we hold it (on SIGTERM); a failure only delays the standby."""
        observed = self._observed
        if observed is None or observed.record.holder != self.identity:
            return
        self._set_leading(None)
        lease = released_lease(self.namespace, self.name, self._wall(), observed.record)
        try:
            await self._api.replace_lease(self.namespace, self.name, lease)
        except KubeError as exc:
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, exc)
            return
        log.info("released the lease %s/%s", self.namespace, self.name)

    async def lead(self, work: Callable[[], Awaitable[None]], stopped: asyncio.Event) -> None:
        """Standby, then `work` while leading, until `stopped` is set (release, return) or the
        lease is lost (`work` cancelled, `LeadershipLost` raised)."""
        stop = asyncio.ensure_future(stopped.wait())
        try:
            acquire = asyncio.ensure_future(self.acquire())
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not acquire.done():
                await _cancel(acquire)
                return
            acquire.result()
            log.info("leading with the lease %s/%s as %s", self.namespace, self.name, self.identity)
            working = asyncio.ensure_future(work())
            keeping = asyncio.ensure_future(self.keep())
            await asyncio.wait({working, keeping, stop}, return_when=asyncio.FIRST_COMPLETED)
            # The work goes first: nothing may act once the renewals have given up.
            await _cancel(working)
            await _cancel(keeping)
            lost = keeping.exception() if keeping.done() and not keeping.cancelled() else None
            if lost is not None:
                raise lost
            try:
                if working.done() and not working.cancelled():
                    working.result()  # a crash of the work is the caller's to see
            finally:
                await self.release()
        finally:
            await _cancel(stop)

    async def _attempt(self) -> bool:
        now = self._clock()
        current = await self._api.read_lease(self.namespace, self.name)
        duration = self.timing.lease_duration_seconds
        if current is None:
            lease = next_lease(
                self.namespace, self.name, self.identity, duration, self._wall(), None
            )
            created = await self._api.create_lease(self.namespace, lease)
            return self._won(created, now)
        record = record_of(current)
        observed = Observed(record, now) if self._observed is None else self._observed
        self._observed = observed = observed.then(record, now)
        if observed.held_by_other(self.identity, now):
            if self._renewed_at is not None:
                self._taken_by = record.holder
                self._set_leading(None)
            return False
        lease = next_lease(self.namespace, self.name, self.identity, duration, self._wall(), record)
        replaced = await self._api.replace_lease(self.namespace, self.name, lease)
        return self._won(replaced, now)

    def _won(self, lease: JsonObject, now: float) -> bool:
        self._observed = Observed(record_of(lease), now)
        self._set_leading(now)
        return True

    def _set_leading(self, renewed_at: float | None) -> None:
        was = self._renewed_at is not None
        self._renewed_at = renewed_at
        if renewed_at is not None:
            self._taken_by = None
        if self._on_change is not None and was != (renewed_at is not None):
            self._on_change(renewed_at is not None)

    def _lose(self, why: str) -> NoReturn:
        self._set_leading(None)
        raise LeadershipLost(why)


async def _cancel(task: asyncio.Future[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
