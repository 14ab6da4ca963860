"""Leader election over a Lease in the fake API server; the controller stops when it loses it.

The record arithmetic is pure; the elector runs on an injected clock where timing matters, and
the whole controller (`adapter.controller.cli.run`, then `python -m adapter.controller`) runs
for real with short lease timings where it does not.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.client import ApiClient

from adapter.controller import cli
from adapter.controller.instruments import Instruments
from adapter.controller.lease import (
    LeaderElector,
    LeadershipLost,
    LeaseRecord,
    LeaseTiming,
    Observed,
    micro_time,
    next_lease,
    released_lease,
)
from adapter.controller.reconcile import Reconciler
from adapter.controller.settings import ControllerSettings
from adapter.kube import KubeApi, KubeError
from tests.adapter.controller.conftest import EPOCH, NS, FakeClock, hpa_object
from tests.conftest import eventually

LOAD = {"push-a": 30000.0, "push-b": 5000.0, "push-c": 20000.0, "push-d": 10000.0}
# Short enough for real-time tests, in client-go's proportions.
QUICK = LeaseTiming(lease_duration_seconds=1.5, renew_deadline_seconds=1.0,
                    retry_period_seconds=0.1)  # fmt: skip


def elector(api: Any, identity: str, clock: FakeClock, **options: Any) -> LeaderElector:
    return LeaderElector(
        api, "default", "pushscale-controller", identity, clock=clock,
        wall=lambda: EPOCH + clock(), **options,
    )  # fmt: skip


def record(holder: str = "a", transitions: int = 0, version: str = "7") -> LeaseRecord:
    return LeaseRecord(holder, 15.0, transitions, "t0", "t1", version)


# The pure part.


def test_micro_time_is_rfc3339_with_microseconds():
    assert micro_time(0.0) == "1970-01-01T00:00:00.000000Z"
    assert micro_time(1.9999996) == "1970-01-01T00:00:02.000000Z"
    assert micro_time(1_780_000_000.25) == "2026-05-28T20:26:40.250000Z"


def test_acquiring_counts_a_transition_and_renewing_keeps_the_acquire_time():
    first = next_lease("ns", "l", "a", 15, 100.0, None)
    assert first["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": micro_time(100.0),
        "renewTime": micro_time(100.0),
        "leaseTransitions": 0,
    }
    assert "resourceVersion" not in first["metadata"]
    renewed = next_lease("ns", "l", "a", 15, 105.0, record("a", 3))
    assert renewed["spec"]["acquireTime"] == "t0"
    assert renewed["spec"]["renewTime"] == micro_time(105.0)
    assert renewed["spec"]["leaseTransitions"] == 3
    assert renewed["metadata"]["resourceVersion"] == "7"
    taken = next_lease("ns", "l", "b", 15, 105.0, record("a", 3))
    assert taken["spec"]["acquireTime"] == micro_time(105.0)
    assert taken["spec"]["leaseTransitions"] == 4


def test_a_released_lease_has_no_holder_and_lasts_a_second():
    spec = released_lease("ns", "l", 100.0, record("a", 2))["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("", 1)
    assert spec["leaseTransitions"] == 2


@pytest.mark.parametrize(
    ("holder", "seen_at", "now", "held"),
    [("a", 0.0, 14.9, True), ("a", 0.0, 15.0, False), ("", 0.0, 1.0, False),
     ("me", 0.0, 1.0, False), ("a", 10.0, 20.0, True)],
    ids=["fresh", "expired", "free", "mine", "expiry-from-when-we-saw-it"],
)  # fmt: skip
def test_when_a_lease_is_held_by_another(holder, seen_at, now, held):
    assert Observed(record(holder), seen_at).held_by_other("me", now) is held


def test_an_unchanged_record_keeps_the_time_it_was_first_seen():
    seen = Observed(record(version="7"), 3.0)
    assert seen.then(record(version="7"), 9.0).at == 3.0
    assert seen.then(record(version="8"), 9.0).at == 9.0


# The elector on an injected clock.


async def test_a_free_lease_is_created_then_renewed(fake, api, clock):
    a = elector(api, "a", clock)
    assert not a.leading()
    assert await a.try_acquire_or_renew()
    created = fake.lease("default", "pushscale-controller")
    assert created is not None and created["spec"]["holderIdentity"] == "a"
    assert a.leading()

    clock.advance(2)
    assert await a.try_acquire_or_renew()
    renewed = fake.lease("default", "pushscale-controller")
    assert renewed is not None
    assert renewed["spec"]["acquireTime"] == created["spec"]["acquireTime"]
    assert renewed["spec"]["renewTime"] == micro_time(EPOCH + 2)
    assert renewed["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]


async def test_a_held_lease_is_taken_only_once_expired_by_our_own_clock(fake, api, clock):
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    clock.advance(14.9)
    assert not await b.try_acquire_or_renew()
    assert not a.leading()  # past its renew deadline already: it would have stopped
    clock.advance(0.1)
    assert await b.try_acquire_or_renew()
    lease = fake.lease("default", "pushscale-controller")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseTransitions"]) == ("b", 1)
    assert not await a.try_acquire_or_renew()


async def test_of_two_candidates_racing_exactly_one_wins(fake, clock):
    for round_ in range(5):
        with fake.api() as api_a, fake.api() as api_b:
            a = LeaderElector(api_a, "default", f"race-{round_}", "a", clock=clock)
            b = LeaderElector(api_b, "default", f"race-{round_}", "b", clock=clock)
            won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(won) == [False, True]


async def test_a_stale_resource_version_is_a_conflict(api, clock):
    a = elector(api, "a", clock)
    assert await a.try_acquire_or_renew()
    lease = await api.read_lease("default", "pushscale-controller")
    assert lease is not None
    assert await a.try_acquire_or_renew()
    with pytest.raises(KubeError) as conflict:
        await api.replace_lease("default", "pushscale-controller", lease)
    assert conflict.value.status == 409


class Steps:
    """A sleep that moves the fake clock instead of waiting, noting whether `who` leads."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.who: LeaderElector | None = None
        self.leading: list[bool] = []

    async def __call__(self, seconds: float) -> None:
        self.clock.advance(seconds)
        assert self.who is not None
        self.leading.append(self.who.leading())
        await asyncio.sleep(0)


async def test_keep_stops_at_once_when_another_holds_the_lease(fake, api, clock):
    steps = Steps(clock)
    a = steps.who = elector(api, "a", clock, sleep=steps)
    assert await a.try_acquire_or_renew()
    fake.put_lease(next_lease("default", "pushscale-controller", "intruder", 15, EPOCH, None))

    with pytest.raises(LeadershipLost, match="is held by intruder"):
        await a.keep()

    assert not a.leading()
    assert clock() == 2.0  # the first renewal found it


async def test_keep_gives_up_when_renewals_fail_past_the_deadline(fake, api, clock):
    steps = Steps(clock)
    a = steps.who = elector(api, "a", clock, sleep=steps)
    assert await a.try_acquire_or_renew()
    fake.set_unavailable(True)

    with pytest.raises(LeadershipLost, match=r"was not renewed for 10 s: .*HTTP 503"):
        await a.keep()

    # It acted while the lease was surely its own, and no longer than the renew deadline,
    # which ends before the lease (15 s) lets anyone else take it.
    assert clock() == 10.0
    assert steps.leading == [True, True, True, True, False]


async def test_release_lets_a_standby_take_over_at_once(fake, api, clock):
    a, b = elector(api, "a", clock), elector(api, "b", clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()

    await a.release()

    lease = fake.lease("default", "pushscale-controller")
    assert lease is not None
    assert (lease["spec"]["holderIdentity"], lease["spec"]["leaseDurationSeconds"]) == ("", 1)
    assert not a.leading()
    assert await b.try_acquire_or_renew()


# The controller for real: short lease timings, real time.


class Recording(KubeApi):
    """A `KubeApi` that notes its own writes, to tell two controllers apart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[str, str]] = []

    async def request(self, what: str, method: str, path: str, **kwargs: Any) -> Any:
        if method != "GET":
            self.writes.append((method, path))
        return await super().request(what, method, path, **kwargs)


def quick_settings(**changes: Any) -> ControllerSettings:
    return ControllerSettings(
        sync_seconds=0.05,
        lease_namespace="default",
        lease_duration_seconds=QUICK.lease_duration_seconds,
        lease_renew_deadline_seconds=QUICK.renew_deadline_seconds,
        lease_retry_period_seconds=QUICK.retry_period_seconds,
        metrics_port=0,
        metrics_bind_address="127.0.0.1",
        **changes,
    )


async def test_of_two_controllers_only_the_leader_acts(fake, cluster):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object(annotations={"pushscale.io/stabilization-seconds": "0"}))
    stop = asyncio.Event()
    apis = [Recording(ApiClient(fake.configuration())) for _ in range(2)]
    electors = [
        LeaderElector(api, "default", "pushscale-controller", name, QUICK)
        for api, name in zip(apis, ("one", "two"), strict=True)
    ]
    settings = quick_settings()

    def controller(index: int) -> Any:
        reconciler = Reconciler(
            apis[index], settings, Instruments(), identity=electors[index].identity,
            leading=electors[index].leading,
        )  # fmt: skip
        return electors[index].lead(reconciler.run, stop)

    running = [asyncio.ensure_future(controller(i)) for i in range(2)]
    try:
        await eventually(lambda: cluster.replicas == 3, what="the scale-down")
        await asyncio.sleep(0.5)
        leading = [candidate.leading() for candidate in electors]
    finally:
        stop.set()
        await asyncio.gather(*running)
        for api in apis:
            api.close()

    assert sorted(leading) == [False, True]
    leader = leading.index(True)
    standby = 1 - leader
    assert any("/scale" in path for _, path in apis[leader].writes)
    assert len(fake.scale_patches) == 1
    assert {e["reportingInstance"] for e in cluster.events()} == {electors[leader].identity}
    # The standby wrote nothing but its attempts at the Lease (a lost race to create it, at
    # most): no Event, no pod, no scale.
    assert all("/leases" in path for _, path in apis[standby].writes)


async def run_controller(api: KubeApi, holder: str, **changes: Any) -> tuple[Any, asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.ensure_future(cli.run(quick_settings(**changes), kube=api, holder=holder,
                                         stopped=stop))  # fmt: skip
    return task, stop


async def test_a_controller_whose_lease_is_taken_over_exits_and_does_nothing_more(fake, cluster):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object())
    api = Recording(ApiClient(fake.configuration()))
    try:
        task, _ = await run_controller(api, "one")
        await eventually(lambda: len(cluster.events()) == 1, what="the first decision")
        fake.put_lease(next_lease("default", "pushscale-controller", "intruder", 15, 0.0, None))

        assert await asyncio.wait_for(task, 5) == 1
        requests = len(fake.requests)
        await asyncio.sleep(0.5)
    finally:
        api.close()
    assert len(fake.requests) == requests
    lease = fake.lease("default", "pushscale-controller")
    assert lease is not None and lease["spec"]["holderIdentity"] == "intruder"


async def test_a_controller_that_cannot_renew_exits_within_the_renew_deadline(fake, cluster):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object())
    with fake.api() as api:
        task, _ = await run_controller(api, "one")
        await eventually(lambda: len(cluster.events()) == 1, what="the first decision")
        fake.set_unavailable(True)
        started = time.monotonic()
        assert await asyncio.wait_for(task, 5) == 1
    assert time.monotonic() - started < QUICK.lease_duration_seconds


async def test_stopping_releases_the_lease(fake, cluster):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object())
    with fake.api() as api:
        task, stop = await run_controller(api, "one")
        await eventually(lambda: len(cluster.events()) == 1, what="the first decision")
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0
    lease = fake.lease("default", "pushscale-controller")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""


async def test_pushscale_controller_in_dry_run_as_a_process(fake, cluster, tmp_path: Path):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object(annotations={"pushscale.io/stabilization-seconds": "0"}))
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    log_path = tmp_path / "controller.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSCALE_CONTROLLER_")}
    args = [
        sys.executable, "-m", "adapter.controller",
        "--kubeconfig", str(kubeconfig),
        "--sync-seconds", "1",
        "--dry-run",
        "--metrics-port", "0",
        "--metrics-bind-address", "127.0.0.1",
        "--lease-namespace", "default",
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=environ)
    try:
        scale_reads = f"/apis/apps/v1/namespaces/{NS}/deployments/push/scale"
        await eventually(
            lambda: sum(r.path == scale_reads for r in fake.requests) >= 2,
            timeout=20,
            what=f"two syncs:\n{log_path.read_text()}",
        )
        [event] = cluster.events()
        assert event["reason"] == "ScaleDown"
        assert event["message"].startswith("dry run: 4 -> 3")
        port = re.search(r"metrics on http://127.0.0.1:(\d+)/metrics", log_path.read_text())
        assert port is not None
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{port[1]}/metrics")).text
        assert "pushscale_controller_leader 1.0" in metrics
        assert 'pushscale_controller_decisions_total{reason="ScaleDown"}' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert fake.pod_patches == fake.scale_patches == []
    lease = fake.lease("default", "pushscale-controller")
    assert lease is not None and lease["spec"]["holderIdentity"] == ""
    assert "released the lease default/pushscale-controller" in log_path.read_text()
