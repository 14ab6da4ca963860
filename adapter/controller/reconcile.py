"""The reconcile loop: one sync over every HPA the controller manages, every `--sync-seconds`.

`adapter.controller.cli` runs `Reconciler.run()` while `adapter.controller.lease` says this
controller leads. A sync lists the autoscaling/v2 HPAs (a list per sync rather than a watch: the
HPA itself decides only every 15 s, a list of HPAs is small, and a list cannot miss an event),
keeps those annotated `pushscale.io/hysteresis: "true"` (`annotations.parse_hpa`), and for each:

1. reads the target's `scale` subresource (spec.replicas, status.selector), lists its pods, and
   reads every pod's `socket_io_connected` and `socket_io_connect` (the connect rate) from the
   custom metrics API through the API server, as the HPA does; a Running pod the adapter left
   out is `missing` in the `policy.Observation`;
2. asks `policy.decide`;
3. on `ScaleDown`: first sets `controller.kubernetes.io/pod-deletion-cost` on the pods from
   their live connections (the ReplicaSet removes the lowest cost first, so the emptiest pods
   go and the reconnect storm is as small as it can be), then patches the scale's spec.replicas
   with the resourceVersion read in step 1 (a scale that changed meanwhile, an HPA scale-up
   say, is a 409: nothing is overwritten, the next sync decides again);
4. reports the decision as an Event on the HPA, a log line and metrics (`instruments`);
5. with `--rebalance`, after a scale-up, once the new pods all run and are read exactly, asks
   the pods above the fair share to shed their excess (`rebalance`).

It fails safe: nothing here ever raises replicas (the HPA keeps scale-up), a decision that
would is refused; a problem anywhere means no scale-down this sync; `--dry-run` decides and
reports but writes nothing but Events; and every write first checks that the lease is still
held (`LeadershipLost` otherwise).

Events: an Event is posted when a decision's reason or the shape of its message changes
(numbers masked, so a countdown or a drifting load does not post every sync), and again every
`--event-repeat-seconds` while it holds, so `kubectl describe hpa` shows the current state
without a line per sync; a performed scale-down always posts (`events`). Log lines follow the
Events (info when posted, debug otherwise). What a sync sees is built by `observe`; those two
modules and the helpers above `Reconciler` are pure.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn, Protocol

from adapter.controller.annotations import (
    METRIC,
    ConfigError,
    HpaConfig,
    parse_hpa,
    wants_hysteresis,
)
from adapter.controller.events import HpaRef, event_object, hpa_ref, message_shape, should_post
from adapter.controller.instruments import Instruments
from adapter.controller.lease import LeadershipLost
from adapter.controller.observe import metric_values, observation, pod_ready, running_pods
from adapter.controller.policy import (
    Decision,
    HysteresisSettings,
    Memory,
    Observation,
    decide,
    kilo,
)
from adapter.controller.rebalance import (
    ShedClient,
    ShedTarget,
    shed_plan,
    shed_requests,
)
from adapter.controller.settings import ControllerSettings
from adapter.kube import JsonObject, KubeError
from adapter.pods import PodError, pod_from_object

log = logging.getLogger("pushscale.controller")

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# The adapter serves the counter socket_io_connect_total as this per-second rate.
CONNECT_RATE = "socket_io_connect"
# Reasons of the Events that are not the policy's decisions.
INVALID = "InvalidHysteresisConfig"
NOT_DISABLED = "ScaleDownNotDisabled"
FAILED_OBSERVE = "FailedGetScale"
FAILED_COST = "FailedSetDeletionCost"
FAILED_RESCALE = "FailedRescale"
REFUSED = "ScaleUpRefused"
REBALANCE = "Rebalance"
FAILED_REBALANCE = "FailedRebalance"
# pod-deletion-cost is an int32.
_COST_RANGE = (-(2**31), 2**31 - 1)
# A scale-up whose pods are not all running and read after this long is not rebalanced: the
# clients that arrived meanwhile have already spread, and a pod that never starts would
# otherwise keep the rebalance pending for ever.
REBALANCE_WAIT_SECONDS = 300.0


class ControllerKube(Protocol):
    """What the reconciler needs of `adapter.kube.KubeApi`."""

    async def list_hpas(self, namespace: str | None = None) -> list[JsonObject]: ...

    async def read_scale(self, scale_path: str) -> JsonObject: ...

    async def patch_scale(
        self, scale_path: str, replicas: int, resource_version: str | None
    ) -> JsonObject: ...

    async def list_namespaced_pods(
        self, namespace: str, label_selector: str
    ) -> list[JsonObject]: ...

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: dict[str, str]
    ) -> JsonObject: ...

    async def create_event(self, namespace: str, event: JsonObject) -> JsonObject: ...

    async def pod_metric(
        self, namespace: str, metric: str, label_selector: str, version: str = "v1beta2"
    ) -> JsonObject: ...


# The pure part.


def deletion_costs(pods: Mapping[str, float], remove: Iterable[str]) -> dict[str, int]:
    """pod-deletion-cost per pod: its connections, so the ReplicaSet (lowest cost first)
    removes the emptiest; a pod that stays costs at least one more than the dearest pod
    chosen to go, so a tie never sends a pod the policy did not choose."""
    low, high = _COST_RANGE
    costs = {pod: min(high, max(low, round(value))) for pod, value in pods.items()}
    leaving = set(remove)
    going = [costs[pod] for pod in leaving if pod in costs]
    if going:
        floor = min(high, max(going) + 1)
        for pod in costs:
            if pod not in leaving:
                costs[pod] = max(costs[pod], floor)
    return costs


def not_acted(settings: HysteresisSettings, before: Memory, seen: Observation) -> Memory:
    """The memory after a ScaleDown that was not carried out (dry run, or a write that failed):
    what the policy itself keeps for a held decision, that is the same sync decided with a
    stabilization window that never ends. No scale event or storm is recorded, and the window
    keeps running, so the next sync decides the same way."""
    never = replace(settings, stabilization_seconds=math.inf)
    return decide(never, before, seen)[1]


# The shell.


class _Problem(Exception):
    """A step of a sync that failed: an Event `reason` and its message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Seen:
    observation: Observation
    scale_version: str
    running: Mapping[str, Mapping[str, Any]]
    metrics_error: str | None


@dataclass
class _State:
    uid: str
    memory: Memory = field(default_factory=Memory)
    last_replicas: int | None = None
    rebalance_since: float | None = None  # a scale-up waiting for its pods to rebalance
    posted: dict[str, tuple[str, float]] = field(default_factory=dict)  # channel → (key, at)


class Reconciler:
    def __init__(
        self,
        api: ControllerKube,
        settings: ControllerSettings,
        instruments: Instruments,
        *,
        identity: str,
        leading: Callable[[], bool] = lambda: True,
        shed: ShedClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._api = api
        self._settings = settings
        self._instruments = instruments
        self._identity = identity
        self._leading = leading
        self._shed = shed
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._states: dict[tuple[str, str], _State] = {}
        self._last_event_ns = 0

    async def run(self) -> NoReturn:
        while True:
            started = self._clock()
            await self.sync()
            elapsed = self._clock() - started
            await self._sleep(max(0.0, self._settings.sync_seconds - elapsed))

    async def sync(self) -> None:
        started = time.perf_counter()
        try:
            hpas = await self._api.list_hpas(self._settings.namespace or None)
        except KubeError as exc:
            log.warning("cannot list HPAs, nothing decided this sync: %s", exc)
            self._instruments.decisions.labels("FailedListHPAs").inc()
            return
        managed = set()
        for hpa in hpas:
            if wants_hysteresis(hpa):
                ref = hpa_ref(hpa)
                managed.add(ref.key)
                await self._reconcile(ref, hpa)
        for key in set(self._states) - managed:
            del self._states[key]
            self._instruments.forget(*key)
        self._instruments.sync_seconds.observe(time.perf_counter() - started)

    async def _reconcile(self, ref: HpaRef, hpa: JsonObject) -> None:
        try:
            config = parse_hpa(hpa)
        except ConfigError as exc:
            self._instruments.decided(ref.namespace, ref.name, INVALID, None)
            invalid = self._states.setdefault(ref.key, _State(ref.uid))
            await self._report(ref, invalid, "config", "Warning", INVALID, f"not managed: {exc}")
            return
        known = self._states.get(ref.key)
        if known is None or known.uid != config.uid:
            # A new HPA, or one deleted and created again: nothing carries over.
            known = self._states[ref.key] = _State(config.uid)
        state = known
        if not config.scale_down_disabled:
            message = (
                f"spec.behavior.scaleDown.selectPolicy is {config.select_policy}, not Disabled: "
                "the HPA scales down too, without the hysteresis (straight back to the target, "
                "during storms); set it to Disabled"
            )
            await self._report(ref, state, "behavior", "Warning", NOT_DISABLED, message)
        try:
            seen = await self._observe(config)
        except _Problem as problem:
            self._instruments.decided(ref.namespace, ref.name, problem.reason, None)
            await self._report(ref, state, "decision", "Warning", problem.reason, str(problem))
            return
        await self._decide(ref, config, state, seen)
        if self._settings.rebalance:
            await self._rebalance(ref, state, seen)
        state.last_replicas = seen.observation.replicas

    async def _observe(self, config: HpaConfig) -> _Seen:
        target = config.target
        try:
            scale = await self._api.read_scale(target.scale_path)
        except KubeError as exc:
            raise _Problem(FAILED_OBSERVE, f"cannot read the scale of {target}: {exc}") from exc
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        selector = (scale.get("status") or {}).get("selector")
        if not isinstance(replicas, int) or not selector:
            raise _Problem(FAILED_OBSERVE, f"the scale of {target} has no replicas or selector")
        try:
            pods = await self._api.list_namespaced_pods(config.namespace, selector)
        except KubeError as exc:
            raise _Problem(FAILED_OBSERVE, f"cannot list the pods of {target}: {exc}") from exc
        running = running_pods(pods)
        connected_answer, rate_answer = await asyncio.gather(
            self._api.pod_metric(config.namespace, METRIC, selector),
            self._api.pod_metric(config.namespace, CONNECT_RATE, selector),
            return_exceptions=True,
        )
        error = None
        try:
            if isinstance(connected_answer, BaseException):
                raise connected_answer
            if isinstance(rate_answer, BaseException):
                raise rate_answer
            connected, rates = metric_values(connected_answer), metric_values(rate_answer)
        except (KubeError, ValueError) as exc:
            # Every pod is then missing, and the policy holds: never scale down blind.
            error = str(exc)
            connected, rates = {}, {}
        seen = observation(self._clock(), replicas, running, connected, rates)
        version = str((scale.get("metadata") or {}).get("resourceVersion") or "")
        return _Seen(seen, version, running, error)

    async def _decide(self, ref: HpaRef, config: HpaConfig, state: _State, seen: _Seen) -> None:
        observed = seen.observation
        before = state.memory
        decision, after = decide(config.settings, before, observed)
        if decision.replicas > observed.replicas or (
            decision.scales_down and not 1 <= decision.replicas < observed.replicas
        ):
            # The policy never asks for this; if it ever did, the HPA owns scale-up.
            message = f"refused a decision for {decision.replicas} of {observed.replicas} pods"
            log.error("%s: %s: %s", ref, message, decision)
            self._instruments.decided(ref.namespace, ref.name, REFUSED, observed.replicas)
            await self._report(ref, state, "decision", "Warning", REFUSED, message)
            return
        message = decision.message
        if seen.metrics_error is not None:
            message += f" (custom metrics API: {seen.metrics_error})"
        if decision.scales_down and self._settings.dry_run:
            state.memory = not_acted(config.settings, before, observed)
            message = f"dry run: {message}"
        elif decision.scales_down:
            try:
                await self._scale_down(config, seen, decision)
            except _Problem as problem:
                state.memory = not_acted(config.settings, before, observed)
                self._instruments.decided(ref.namespace, ref.name, problem.reason, None)
                await self._report(ref, state, "decision", "Warning", problem.reason, str(problem))
                return
            state.memory = after
            self._instruments.scaled_down(ref.namespace, ref.name)
        else:
            state.memory = after
        self._instruments.decided(ref.namespace, ref.name, decision.reason, decision.replicas)
        warning = decision.reason == "ScaleDownHeld" and bool(observed.missing)
        await self._report(
            ref,
            state,
            "decision",
            "Warning" if warning else "Normal",
            decision.reason,
            message,
            force=decision.scales_down and not self._settings.dry_run,
        )

    async def _scale_down(self, config: HpaConfig, seen: _Seen, decision: Decision) -> None:
        """Deletion costs first, then the scale; raises `_Problem` when either failed."""
        namespace, target = config.namespace, config.target
        costs = deletion_costs(seen.observation.pods, decision.remove)
        changed = {
            pod: cost
            for pod, cost in costs.items()
            if ((seen.running[pod].get("metadata") or {}).get("annotations") or {}).get(
                DELETION_COST
            )
            != str(cost)
        }
        self._require_leading()
        results = await asyncio.gather(
            *(
                self._api.patch_pod_annotations(namespace, pod, {DELETION_COST: str(cost)})
                for pod, cost in sorted(changed.items())
            ),
            return_exceptions=True,
        )
        failures = [str(r) for r in results if isinstance(r, BaseException)]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, KubeError):
                raise result
        if failures:
            # Without the costs the ReplicaSet may remove a full pod: no scale-down.
            raise _Problem(
                FAILED_COST,
                f"not scaling {target} down: pod-deletion-cost not set: {'; '.join(failures)}",
            )
        self._require_leading()
        try:
            await self._api.patch_scale(target.scale_path, decision.replicas, seen.scale_version)
        except KubeError as exc:
            if exc.status == 409:
                message = (
                    f"{target} was scaled since it was read (the HPA scaling up?): not "
                    "overwriting it; deciding again next sync"
                )
            else:
                message = f"cannot scale {target} to {decision.replicas}: {exc}"
            raise _Problem(FAILED_RESCALE, message) from exc

    async def _rebalance(self, ref: HpaRef, state: _State, seen: _Seen) -> None:
        observed, now = seen.observation, self._clock()
        last = state.last_replicas
        if last is not None and observed.replicas > last:
            state.rebalance_since = now
            log.info(
                "%s: scaled up %d -> %d; rebalancing once all run", ref, last, observed.replicas
            )
        elif last is not None and observed.replicas < last:
            state.rebalance_since = None
        since = state.rebalance_since
        if since is None:
            return
        if now - since > REBALANCE_WAIT_SECONDS:
            state.rebalance_since = None
            log.info("%s: the new pods did not all start and report in time: no rebalance", ref)
            return
        ready = [pod for pod, obj in seen.running.items() if pod_ready(obj)]
        if observed.missing or min(len(observed.pods), len(ready)) < observed.replicas:
            return  # the new pods are not all serving yet: shed now and they get no share
        state.rebalance_since = None
        plan = shed_plan(observed.pods, self._settings.rebalance_slack)
        if not plan:
            log.info("%s: no pod above the fair share after the scale-up", ref)
            return
        fair = observed.total / len(observed.pods)
        asked = ", ".join(
            f"{pod} ({kilo(observed.pods[pod])}) {kilo(n)}" for pod, n in plan.items()
        )
        message = (
            f"after the scale-up to {observed.replicas}: fair share {kilo(fair)} "
            f"+{self._settings.rebalance_slack:.0%}; asking to shed: {asked}"
        )
        if self._settings.dry_run or self._shed is None:
            await self._report(ref, state, "rebalance", "Normal", REBALANCE, f"dry run: {message}")
            return
        targets = {}
        for pod in plan:
            try:
                parsed = pod_from_object(seen.running[pod])
            except PodError as exc:
                log.warning("%s: %s cannot be asked to shed: %s", ref, pod, exc)
                continue
            if parsed.ip is not None:
                targets[pod] = ShedTarget(pod, parsed.ip, parsed.metrics_port, parsed.workers)
        self._require_leading()
        results = await self._shed.send(shed_requests(plan, targets))
        for result in results:
            self._instruments.shed_requests.labels(result.outcome).inc()
        shedding = sum(result.shedding for result in results)
        failed = [
            f"{r.request.pod}/{r.request.worker}: {r.outcome} {r.detail}".rstrip()
            for r in results
            if r.outcome != "accepted"
        ]
        summary = f"{message}; {shedding} sockets being shed"
        if failed:
            summary += f"; not shedding: {', '.join(failed)}"
        event_type, reason = ("Normal", REBALANCE) if shedding else ("Warning", FAILED_REBALANCE)
        await self._report(ref, state, "rebalance", event_type, reason, summary, force=True)

    def _require_leading(self) -> None:
        if not self._leading():
            raise LeadershipLost("the lease is not held: no write")

    async def _report(
        self,
        ref: HpaRef,
        state: _State,
        channel: str,
        event_type: str,
        reason: str,
        message: str,
        *,
        force: bool = False,
    ) -> None:
        """An Event (unless the same was posted lately) and a log line."""
        now = self._clock()
        key = f"{event_type}|{reason}|{message_shape(message)}"
        post = force or should_post(
            state.posted.get(channel), key, now, self._settings.event_repeat_seconds
        )
        level = logging.WARNING if event_type == "Warning" else logging.INFO
        log.log(level if post else logging.DEBUG, "%s: %s: %s", ref, reason, message)
        if not post:
            return
        self._require_leading()
        self._last_event_ns = max(int(self._wall() * 1e9), self._last_event_ns + 1)
        event = event_object(
            ref, event_type, reason, message, self._wall(), self._last_event_ns, self._identity
        )
        try:
            await self._api.create_event(ref.namespace, event)
        except KubeError as exc:
            log.warning("%s: cannot post the %s Event: %s", ref, reason, exc)
            return
        state.posted[channel] = (key, now)
