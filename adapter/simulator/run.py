"""One scenario through one variant, second by second: the cluster, the HPA, the controller.

`adapter.simulator.cli` calls `simulate(scenario, variant)` for each of `VARIANTS` and hands the
`Timeline`s to `summary` and `plot`. Every second: users arrive and leave, the cluster steps
(`cluster`), and every 15 s the HPA model syncs on the exact per-pod sums as the adapter serves
them (a scrape round behind, `ADAPTER_LAG_SECONDS`); in the `controller` variant the HPA's
scale-down is disabled and `adapter.controller.policy` decides scale-downs on the same sync,
choosing the emptiest pods through pod-deletion-cost, as `pushscale controller` does.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from adapter.controller import hpa, policy
from adapter.controller.rebalance import shed_plan
from adapter.simulator.cluster import Cluster, Pod
from adapter.simulator.scenarios import Scenario

# The adapter serves a round at most 2 s old; the HPA reads it on its own sync.
ADAPTER_LAG_SECONDS = 2
# The controller reads the adapter's socket_io_connect rate, a 60 s window.
RATE_WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    behavior: hpa.Behavior | None
    controller: bool = False
    rebalance: bool = False


VARIANTS = (
    # The seed's HPA had no `behavior`: the controller's older path (5 min scale-down window).
    Variant("hpa-default", "stock HPA, no behavior set (the seed's; scale-down window 300 s)",
            None),
    Variant("hpa-fast", "stock HPA, scaleDown.stabilizationWindowSeconds: 60",
            hpa.behavior(scale_down_window_seconds=60)),
    Variant("controller", "HPA (scaleDown selectPolicy: Disabled) + pushscale controller",
            hpa.behavior(scale_down_select="Disabled"), controller=True),
    # Not one of the three compared: what --rebalance buys (fewer minutes over the target
    # after a scale-up or a pod replaced) and what it costs (reconnects).
    Variant("controller-rebalance", "as controller, with --rebalance",
            hpa.behavior(scale_down_select="Disabled"), controller=True, rebalance=True),
)  # fmt: skip


@dataclass(frozen=True)
class ScaleEvent:
    at: int
    before: int
    after: int
    by: str  # "hpa", "controller" or "replicaset"
    message: str

    @property
    def up(self) -> bool:
        return self.after > self.before


@dataclass
class Timeline:
    scenario: Scenario
    variant: Variant
    users: list[float] = field(default_factory=list)
    connected: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    max_load: list[float] = field(default_factory=list)  # the fullest pod's sockets
    events: list[ScaleEvent] = field(default_factory=list)
    decisions: list[tuple[int, str, str]] = field(default_factory=list)  # controller's
    lost: float = 0.0
    dropped: float = 0.0  # sockets the servers closed: drains and sheds


def simulate(
    scenario: Scenario,
    variant: Variant,
    progress: Callable[[int], None] = lambda _: None,
    settings: policy.HysteresisSettings | None = None,
) -> Timeline:
    run = _Run(scenario, variant, settings)
    for now in range(scenario.seconds):
        run.second(now)
        if now % 600 == 0:
            progress(now)
    run.timeline.lost = run.cluster.lost
    run.timeline.dropped = run.cluster.drained + run.cluster.shed
    progress(scenario.seconds)
    return run.timeline


class _Run:
    def __init__(
        self, scenario: Scenario, variant: Variant, settings: policy.HysteresisSettings | None
    ) -> None:
        self.scenario = scenario
        self.variant = variant
        self.cluster = Cluster(scenario.cluster)
        for _ in range(scenario.initial_replicas):
            self.cluster.add_pod(0, scenario.users[0] / scenario.initial_replicas, ready=True)
        self.spec = hpa.HpaSpec(
            target_average_value=scenario.target_per_pod,
            min_replicas=scenario.min_replicas,
            max_replicas=scenario.max_replicas,
            behavior=variant.behavior,
        )
        self.hysteresis = settings or policy.HysteresisSettings(
            target_per_pod=scenario.target_per_pod, min_replicas=scenario.min_replicas
        )
        self.hpa_memory = hpa.HpaMemory()
        self.controller_memory = policy.Memory()
        self.replicas = scenario.initial_replicas
        self.timeline = Timeline(scenario, variant)
        # What the adapter serves: each pod's sockets a scrape round ago.
        self.seen: collections.deque[dict[str, float]] = collections.deque(
            maxlen=ADAPTER_LAG_SECONDS + 1
        )

    def second(self, now: int) -> None:
        users = self.scenario.users
        change = users[now] - (users[now - 1] if now else users[0])
        if change > 0:
            self.cluster.arrive(change, now)
        elif change < 0:
            self.cluster.leave(-change)
        if now in self.scenario.kills:
            self._kill_one(now)
        self.cluster.step(now)
        self.seen.append({pod.name: pod.connections for pod in self.cluster.pods})
        if now and now % hpa.SYNC_PERIOD_SECONDS == 0:
            self._hpa_sync(now)
            if self.variant.controller:
                self._controller_sync(now)
        _record(self.timeline, self.cluster, users[now], self.replicas, now)

    def _scale(self, now: int, replicas: int, by: str, message: str) -> None:
        self.timeline.events.append(ScaleEvent(now, self.replicas, replicas, by, message))
        self.replicas = replicas
        self.cluster.scale_to(replicas, now)

    def _hpa_sync(self, now: int) -> None:
        lagged = self.seen[0]
        samples = [
            hpa.PodSample(pod.name, None if pod.pending(now) else lagged.get(pod.name, 0.0),
                          phase="Pending" if pod.pending(now) else "Running")
            for pod in self.cluster.members
        ]  # fmt: skip
        decision, self.hpa_memory = hpa.sync(
            self.spec, self.replicas, samples, self.hpa_memory, now
        )
        if decision.desired_replicas != self.replicas:
            self._scale(now, decision.desired_replicas, "hpa", decision.reason)

    def _controller_sync(self, now: int) -> None:
        lagged = self.seen[0]
        running = [pod for pod in self.cluster.members if not pod.pending(now)]
        observation = policy.Observation(
            at=now,
            replicas=self.replicas,
            pods={pod.name: lagged.get(pod.name, 0.0) for pod in running},
            connect_rate=self.cluster.connect_rate(RATE_WINDOW_SECONDS),
        )
        chosen, self.controller_memory = policy.decide(
            self.hysteresis, self.controller_memory, observation
        )
        self.timeline.decisions.append((now, chosen.reason, chosen.message))
        if self.variant.rebalance and not chosen.scales_down:
            self._rebalance(running, observation.pods)
        if chosen.scales_down:
            for pod in self.cluster.members:
                # pod-deletion-cost from live connections: the chosen pods go first.
                pod.deletion_cost = -1.0 if pod.name in chosen.remove else pod.connections
            self._scale(now, chosen.replicas, "controller", chosen.message)

    def _rebalance(self, running: list[Pod], seen: Mapping[str, float]) -> None:
        """`pushscale controller --rebalance`: while every pod runs and none is shedding, pods
        above the fair share shed their excess, paced. It converges, but dearly: the load
        balancer sends a shed client to any pod, so a new pod gains 1/n of what is shed."""
        if len(running) != len(self.cluster.members) or any(p.shed_remaining for p in running):
            return
        for name, count in shed_plan(seen).items():
            pod = next(pod for pod in running if pod.name == name)
            pod.shed_remaining = count

    def _kill_one(self, now: int) -> None:
        """A pod deleted by hand: it drains, and the ReplicaSet starts a replacement at once."""
        ready = [pod for pod in self.cluster.members if pod.ready(now)]
        if ready:
            self.cluster.delete_pod(ready[0], now)
            self.cluster.add_pod(now)
            message = f"{ready[0].name} deleted and replaced"
            self.timeline.events.append(ScaleEvent(now, 0, 0, "replicaset", message))


def _record(timeline: Timeline, cluster: Cluster, users: float, replicas: int, now: int) -> None:
    loads = [pod.connections for pod in cluster.pods]
    timeline.users.append(users)
    timeline.connected.append(sum(loads))
    timeline.replicas.append(replicas)
    timeline.ready.append(sum(1 for pod in cluster.pods if pod.ready(now)))
    timeline.max_load.append(max(loads, default=0.0))
