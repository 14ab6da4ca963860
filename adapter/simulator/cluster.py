"""The cluster a scenario runs on, one second at a time (pure: counts in, counts out).

`adapter.simulator.run` owns one `Cluster` per variant and calls, each second: `arrive` (new
users), `leave` (users gone), `step` (pods start, drains and rebalancing close sockets, dropped
clients come back after their backoff), and at each sync the scaling calls `scale_to` /
`delete_pod`. Everything is a count (float): the load balancer spreads a second's connection
attempts evenly over the ready pods, as kube-proxy's random choice does on average.

What it models, and where each rule comes from:
- a new pod is Pending for `startup_seconds`, then ready; only ready pods get new connections,
  and existing sockets stay where they are (seed section 2);
- a pod above `max_per_pod` refuses new sockets (the push server's --max-connections, HTTP 503
  before the upgrade), so the attempt fails and the client backs off;
- a pod above `recommended_per_pod` sheds its excess, newest first, at `shed_per_second`
  (the push server's rebalancing: 5 ms apart per worker), and those clients reconnect; the
  controller can ask a pod to shed more (`shed_remaining`: its rebalancing after a scale-up);
- a removed pod stops being ready at once and closes its sockets evenly over `drain_seconds`
  (the paced drain); every closed socket is a client that reconnects after its backoff;
- a client retries at most `reconnection_attempts` times, then gives up: counted as lost.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from adapter.simulator.backoff import SEED_CLIENT, ClientOptions, delay_shares


@dataclass(frozen=True)
class ClusterSettings:
    workers_per_pod: int = 4
    # The push server's defaults: rebalancing
    # above 12.5k per worker (--recommended-connections 12500), a quarter above the HPA's 10k
    # per worker, refusing above 15k. With rebalancing at the HPA target itself, every pod
    # sheds its excess as soon as all are above target, the churned clients sit in backoff, and
    # the HPA never sees the average rise past its tolerance: it cannot scale up.
    recommended_per_pod: float = 50_000
    max_per_pod: float = 60_000
    shed_per_second: float = 4 * 200.0  # 5 ms apart, per worker
    drain_seconds: float = 20.0
    startup_seconds: float = 20.0
    client: ClientOptions = SEED_CLIENT


@dataclass
class Pod:
    name: str
    created_at: float
    ready_at: float
    connections: float = 0.0
    draining_since: float | None = None
    drain_rate: float = 0.0  # sockets closed per second while draining
    deletion_cost: float = 0.0
    shed_remaining: float = 0.0  # sockets the controller asked this pod to shed

    def ready(self, now: float) -> bool:
        return self.draining_since is None and now >= self.ready_at

    def pending(self, now: float) -> bool:
        return self.draining_since is None and now < self.ready_at


@dataclass
class Cluster:
    settings: ClusterSettings
    pods: list[Pod] = field(default_factory=list)
    # due second -> per attempt (0-based) the clients whose next attempt fires then
    retries: dict[int, list[float]] = field(default_factory=dict)
    lost: float = 0.0
    shed: float = 0.0  # sockets closed to move them (rebalancing), cumulative
    drained: float = 0.0  # sockets closed by removed pods, cumulative
    connects: float = 0.0  # successful connections, cumulative (socket_io_connect_total)
    _made: int = 0
    recent_connects: collections.deque[float] = field(default_factory=collections.deque)

    # -- scaling ----------------------------------------------------------------------------

    def add_pod(self, now: float, connections: float = 0.0, ready: bool = False) -> Pod:
        self._made += 1
        ready_at = now if ready else now + self.settings.startup_seconds
        pod = Pod(f"pod-{self._made}", now, ready_at, connections)
        self.pods.append(pod)
        return pod

    @property
    def members(self) -> list[Pod]:
        """The pods the Deployment counts: every pod not yet terminating."""
        return [pod for pod in self.pods if pod.draining_since is None]

    def scale_to(self, replicas: int, now: float) -> None:
        """The ReplicaSet's reaction to a new spec.replicas: new pods, or the lowest-ranked
        ones deleted (controller.ReplicaSet's ranking: pending before ready, then the lower
        pod-deletion-cost, then the newer pod)."""
        members = self.members
        for _ in range(replicas - len(members)):
            self.add_pod(now)
        if replicas < len(members):
            ranked = sorted(
                members, key=lambda pod: (not pod.pending(now), pod.deletion_cost, -pod.created_at)
            )
            for pod in ranked[: len(members) - replicas]:
                self.delete_pod(pod, now)

    def delete_pod(self, pod: Pod, now: float) -> None:
        """SIGTERM: readiness off at once, sockets closed evenly over the drain window."""
        pod.draining_since = now
        pod.drain_rate = pod.connections / max(self.settings.drain_seconds, 1.0)

    # -- traffic ------------------------------------------------------------------------------

    def arrive(self, users: float, now: float) -> None:
        """New users open their first connection (no backoff before a first attempt)."""
        self._attempt(users, 0, now, first=True)

    def leave(self, users: float) -> None:
        """Users close the page: their sockets go, wherever they are (connected or waiting)."""
        connected = sum(pod.connections for pod in self.pods)
        waiting = sum(sum(counts) for counts in self.retries.values())
        total = connected + waiting
        if total <= 0:
            return
        share = min(1.0, users / total)
        for pod in self.pods:
            pod.connections *= 1 - share
        for counts in self.retries.values():
            for attempt, count in enumerate(counts):
                counts[attempt] = count * (1 - share)

    def step(self, now: float) -> None:
        """One second: drains and sheds close sockets, due clients retry, pods finish."""
        settings = self.settings
        for pod in list(self.pods):
            if pod.draining_since is not None:
                closed = min(pod.connections, pod.drain_rate)
                if (
                    pod.connections - closed <= 1e-6
                    or now - pod.draining_since >= settings.drain_seconds
                ):
                    closed = pod.connections
                    self.pods.remove(pod)
                pod.connections -= closed
                self.drained += closed
                self._dropped(closed, now)
            else:
                excess = max(pod.connections - settings.recommended_per_pod, pod.shed_remaining)
                shed = min(excess, settings.shed_per_second, pod.connections)
                if shed > 0:
                    pod.connections -= shed
                    pod.shed_remaining = max(0.0, pod.shed_remaining - shed)
                    self.shed += shed
                    self._dropped(shed, now)
        due = self.retries.pop(int(now), None)
        if due is not None:
            for attempt, count in enumerate(due):
                if count > 0:
                    self._attempt(count, attempt, now)
        self.recent_connects.append(self.connects)

    def connect_rate(self, window_seconds: int) -> float:
        """Connections per second over the last window (the adapter's socket_io_connect)."""
        history = self.recent_connects
        while len(history) > window_seconds + 1:
            history.popleft()
        if len(history) < 2:
            return 0.0
        return (history[-1] - history[0]) / (len(history) - 1)

    @property
    def waiting(self) -> float:
        return sum(sum(counts) for counts in self.retries.values())

    def _dropped(self, clients: float, now: float) -> None:
        """Sockets closed by the server: each client starts its reconnect backoff."""
        if clients > 0:
            self._schedule(clients, 0, now)

    def _attempt(self, clients: float, attempt: int, now: float, first: bool = False) -> None:
        """Clients try to connect: the ready pods with room take them, evenly; the rest fail
        and back off (a first connection that fails starts the backoff at attempt 0)."""
        ready = [pod for pod in self.pods if pod.ready(now)]
        accepted = 0.0
        if ready:
            each = clients / len(ready)
            for pod in ready:
                taken = max(0.0, min(each, self.settings.max_per_pod - pod.connections))
                pod.connections += taken
                accepted += taken
        self.connects += accepted
        failed = clients - accepted
        if failed <= 1e-9:
            return
        if first:
            self._schedule(failed, 0, now)
        elif attempt + 1 >= self.settings.client.reconnection_attempts:
            self.lost += failed
        else:
            self._schedule(failed, attempt + 1, now)

    def _schedule(self, clients: float, attempt: int, now: float) -> None:
        attempts = self.settings.client.reconnection_attempts
        for offset, share in enumerate(delay_shares(self.settings.client, attempt)):
            if share:
                due = self.retries.setdefault(int(now) + offset + 1, [0.0] * attempts)
                due[attempt] += clients * share
