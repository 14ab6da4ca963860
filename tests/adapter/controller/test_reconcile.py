"""The reconcile loop against the fake API server, one sync at a time on an injected clock.

The target is 40000 connections per pod with the default headroom (0.2), so a pod may keep
32000 after a scale-down.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from aiohttp import web
from kubernetes.client import ApiClient

from adapter.controller import reconcile
from adapter.controller.events import message_shape, should_post
from adapter.controller.lease import LeadershipLost
from adapter.controller.observe import metric_values, observation, running_pods
from adapter.controller.policy import Decision, HysteresisSettings, Memory, Observation, decide
from adapter.controller.rebalance import ShedClient
from adapter.controller.reconcile import DELETION_COST, deletion_costs, not_acted
from adapter.kube import KubeApi
from tests.adapter.controller.conftest import NS, Cluster, hpa_object, make_reconciler, ready_pod
from tests.conftest import free_port_block

# 65k over 4 pods: 3 pods would carry it under 32k each, so one may go, the emptiest (push-b).
LOAD = {"push-a": 30000.0, "push-b": 5000.0, "push-c": 20000.0, "push-d": 10000.0}


def scale_patch_index(cluster: Cluster) -> int:
    scale = f"/apis/apps/v1/namespaces/{NS}/deployments/push/scale"
    return cluster.writes().index(("PATCH", scale))


async def test_scale_down_after_the_window_sets_deletion_costs_first(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object())
    controller = make_reconciler(api, clock)

    await controller.sync()
    [held] = cluster.events()
    assert (held["reason"], held["type"]) == ("ScaleDownHeld", "Normal")
    assert "below the threshold for 0 s of 300 s" in held["message"]
    assert held["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
    assert held["reportingInstance"] == "controller-0_1"
    clock.advance(150)
    await controller.sync()
    # The same decision, only its numbers moved on: no second Event.
    assert len(cluster.events()) == 1
    assert fake.pod_patches == fake.scale_patches == []

    clock.advance(150)
    await controller.sync()

    assert cluster.replicas == 3
    costs = {name: patch["metadata"]["annotations"][DELETION_COST] for _, name, patch in
             fake.pod_patches}  # fmt: skip
    assert costs == {"push-a": "30000", "push-b": "5000", "push-c": "20000", "push-d": "10000"}
    assert fake.pod("live", "push-b")["metadata"]["annotations"][DELETION_COST] == "5000"
    # Every pod carries its cost before the scale changes.
    pod_writes = [i for i, (method, path) in enumerate(cluster.writes()) if "/pods/" in path]
    assert len(pod_writes) == 4 and max(pod_writes) < scale_patch_index(cluster)
    [(_, _, patch)] = fake.scale_patches
    assert patch["spec"] == {"replicas": 3}
    assert patch["metadata"]["resourceVersion"]  # refused if the scale moved meanwhile
    scaled = cluster.events("ScaleDown")[-1]
    assert scaled["type"] == "Normal"
    assert scaled["message"].startswith("4 -> 3: 65.0k sockets leave 21.7k per pod")
    assert scaled["message"].endswith("removing push-b (5.0k)")


async def test_held_while_the_storm_settles(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    # A window shorter than the settle time, so the storm rule is what holds.
    fake.add_hpa(hpa_object(annotations={
        "pushscale.io/stabilization-seconds": "30",
        "pushscale.io/settle-max-seconds": "600",
        "pushscale.io/cooldown-seconds": "10",
    }))  # fmt: skip
    controller = make_reconciler(api, clock)
    await controller.sync()
    clock.advance(30)
    await controller.sync()
    assert cluster.replicas == 3 and len(fake.scale_patches) == 1

    # push-b is gone; its clients are coming back, and connecting fast.
    fake.delete_pod(NS, "push-b")
    back = {"push-a": 30500.0, "push-c": 20500.0, "push-d": 10500.0}
    cluster.serve(back, rate=300.0)
    for _ in range(3):
        clock.advance(15)
        await controller.sync()

    held = cluster.events("ScaleDownHeld")[-1]
    assert held["message"] == "storm settling, 61.5k of 65.0k sockets back, 900/s connecting"
    assert len(fake.scale_patches) == 1 and cluster.replicas == 3

    # Back and calm: settled; 3 pods are what 65k needs, so nothing more goes.
    cluster.serve({"push-a": 32000.0, "push-c": 22000.0, "push-d": 11000.0})
    clock.advance(15)
    await controller.sync()
    assert cluster.events()[-1]["reason"] == "NoScaleDown"
    assert len(fake.scale_patches) == 1


async def test_dry_run_reports_but_writes_nothing_else(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object())
    controller = make_reconciler(api, clock, dry_run=True)

    for _ in range(3):
        await controller.sync()
        clock.advance(150)
    await controller.sync()

    [would] = cluster.events("ScaleDown")
    assert would["message"].startswith("dry run: 4 -> 3: ")
    assert fake.pod_patches == fake.scale_patches == []
    assert cluster.replicas == 4
    assert {path for _, path in cluster.writes()} == {f"/api/v1/namespaces/{NS}/events"}


async def test_a_pod_without_an_exact_value_holds_the_scale_down(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    cluster.serve({name: LOAD[name] for name in ("push-a", "push-b", "push-c")})
    fake.add_hpa(hpa_object(annotations={"pushscale.io/stabilization-seconds": "0"}))
    controller = make_reconciler(api, clock)

    await controller.sync()

    [held] = cluster.events()
    assert (held["reason"], held["type"]) == ("ScaleDownHeld", "Warning")
    assert held["message"] == "no exact value for push-d; not scaling down blind"
    assert fake.scale_patches == []


async def test_no_answer_from_the_custom_metrics_api_holds_with_the_cause(
    fake, api, cluster, clock
):
    cluster.deploy(LOAD)
    fake.metrics_failure = (503, "the adapter is unavailable")
    fake.add_hpa(hpa_object(annotations={"pushscale.io/stabilization-seconds": "0"}))
    controller = make_reconciler(api, clock)

    await controller.sync()

    [held] = cluster.events()
    assert held["type"] == "Warning"
    assert held["message"].startswith("no exact value for push-a, push-b, push-c, push-d;")
    assert "custom metrics API: " in held["message"]
    assert "the adapter is unavailable" in held["message"]
    assert fake.scale_patches == []


async def test_an_hpa_that_scales_down_itself_gets_a_warning(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object(select_policy=None))
    controller = make_reconciler(api, clock)

    await controller.sync()
    await controller.sync()

    [warning] = cluster.events("ScaleDownNotDisabled")
    assert warning["type"] == "Warning"
    assert "selectPolicy is Max, not Disabled" in warning["message"]
    # It still decides: with its own scale-down on, the HPA would otherwise run unchecked.
    assert [e["reason"] for e in cluster.events()] == ["ScaleDownNotDisabled", "ScaleDownHeld"]


async def test_a_bad_configuration_is_reported_and_skipped(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object(annotations={"pushscale.io/headroom": "20%"}))
    fake.add_hpa(hpa_object("plain") | {"metadata": {"name": "plain", "namespace": NS}})
    controller = make_reconciler(api, clock)

    await controller.sync()

    [invalid] = cluster.events()
    assert (invalid["reason"], invalid["type"]) == ("InvalidHysteresisConfig", "Warning")
    assert invalid["message"] == "not managed: pushscale.io/headroom: must be a number, not '20%'"
    assert invalid["involvedObject"]["name"] == "push"
    assert not any(r.path.endswith("/scale") for r in fake.requests)


async def test_a_scale_changed_meanwhile_is_never_overwritten(fake, cluster, clock):
    class ScaledUpMeanwhile(KubeApi):
        async def patch_scale(self, path: str, replicas: int, version: str | None) -> Any:
            fake.set_replicas(NS, "push", 6)  # the HPA scales up between our read and write
            return await super().patch_scale(path, replicas, version)

    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object(annotations={"pushscale.io/stabilization-seconds": "0"}))
    api = ScaledUpMeanwhile(ApiClient(fake.configuration()))
    try:
        await make_reconciler(api, clock).sync()
    finally:
        api.close()

    assert cluster.replicas == 6
    [failed] = cluster.events("FailedRescale")
    assert "was scaled since it was read" in failed["message"]
    assert fake.scale_patches == []


async def test_no_code_path_scales_up(fake, api, cluster, clock, monkeypatch):
    def scale_up(settings: Any, memory: Memory, seen: Observation) -> tuple[Decision, Memory]:
        return Decision(seen.replicas + 2, (), "ScaleDown", "a bug"), memory

    monkeypatch.setattr(reconcile, "decide", scale_up)
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object())

    await make_reconciler(api, clock).sync()

    assert [e["reason"] for e in cluster.events()] == ["ScaleUpRefused"]
    assert fake.pod_patches == fake.scale_patches == []
    assert cluster.replicas == 4


async def test_without_the_lease_nothing_is_written(fake, api, cluster, clock):
    cluster.deploy(LOAD)
    fake.add_hpa(hpa_object(annotations={"pushscale.io/stabilization-seconds": "0"}))
    controller = make_reconciler(api, clock, leading=lambda: False)

    with pytest.raises(LeadershipLost):
        await controller.sync()

    assert cluster.writes() == []


async def test_an_unchanged_decision_is_posted_again_after_the_repeat_time(
    fake, api, cluster, clock
):
    cluster.deploy({"push-a": 35000.0, "push-b": 36000.0})
    fake.add_hpa(hpa_object())
    controller = make_reconciler(api, clock, event_repeat_seconds=60)

    for step in range(6):
        cluster.serve({"push-a": 35000.0 + step, "push-b": 36000.0})
        await controller.sync()
        clock.advance(15)

    # t = 0 and t = 60: NoScaleDown twice, whatever the numbers did in between.
    assert [e["reason"] for e in cluster.events()] == ["NoScaleDown", "NoScaleDown"]


async def test_rebalance_after_a_scale_up_once_the_new_pods_serve(fake, api, cluster, clock):
    port = free_port_block(2)
    seen: list[tuple[int, dict[str, Any], str]] = []

    async def shed(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.url.port or 0, body, request.headers["Authorization"]))
        return web.json_response({"shedding": body["count"], "intervalMs": 5.0}, status=202)

    app = web.Application()
    app.router.add_post("/admin/shed", shed)
    runner = web.AppRunner(app)
    await runner.setup()
    for worker in range(2):
        await web.TCPSite(runner, "127.0.0.1", port + worker).start()
    try:
        fields = {"ip": "127.0.0.1", "metrics_port": port, "workers": 2}
        cluster.deploy({"push-a": 60000.0}, **fields)
        fake.add_hpa(hpa_object())
        async with httpx.AsyncClient() as http:
            controller = make_reconciler(
                api, clock, rebalance=True, admin_token="a" * 20, shed=ShedClient(http, "a" * 20)
            )
            await controller.sync()
            # The HPA scales up; the new pods start (not ready yet), then serve.
            fake.set_replicas(NS, "push", 3)
            fake.add_pod(ready_pod("push-b", phase="Pending"))
            clock.advance(15)
            await controller.sync()
            assert seen == []
            fake.delete_pod(NS, "push-b")
            for name in ("push-b", "push-c"):
                fake.add_pod(ready_pod(name))
            cluster.serve({"push-a": 60000.0, "push-b": 0.0, "push-c": 0.0})
            clock.advance(15)
            await controller.sync()
            clock.advance(15)
            await controller.sync()
    finally:
        await runner.cleanup()

    # Fair share 20k, +10%: push-a keeps 22k and sheds 38k, half per worker, once.
    assert sorted(seen) == [
        (port, {"count": 19000, "intervalMs": 5.0}, f"Bearer {'a' * 20}"),
        (port + 1, {"count": 19000, "intervalMs": 5.0}, f"Bearer {'a' * 20}"),
    ]
    [rebalanced] = cluster.events("Rebalance")
    assert "fair share 20.0k +10%; asking to shed: push-a (60.0k) 38.0k" in rebalanced["message"]
    assert rebalanced["message"].endswith("; 38000 sockets being shed")


# The pure helpers.


@pytest.mark.parametrize(
    ("pods", "remove", "costs"),
    [
        ({"a": 100.0, "b": 5.0}, ["b"], {"a": 100, "b": 5}),
        ({"a": 5.0, "b": 5.0}, ["a"], {"a": 5, "b": 6}),
        ({"a": 5.0, "b": 7.0, "c": 9.0}, ["a", "b"], {"a": 5, "b": 7, "c": 9}),
        ({"a": 7.0, "b": 3.0, "c": 6.0}, ["b", "c"], {"a": 7, "b": 3, "c": 6}),
        ({"a": 4.0, "b": 4.4}, [], {"a": 4, "b": 4}),
        ({"a": 1e12, "b": 0.0}, ["b"], {"a": 2**31 - 1, "b": 0}),
    ],
    ids=["emptiest-lowest", "tie-goes-to-the-chosen", "two-go", "stays-above-the-going",
         "none-go", "int32"],
)  # fmt: skip
def test_deletion_costs(pods, remove, costs):
    assert deletion_costs(pods, remove) == costs


def test_observation_counts_only_running_pods_with_both_values():
    pods = [
        ready_pod("a"),
        ready_pod("b"),
        ready_pod("c", phase="Pending"),
        ready_pod("d", deleting=True),
        ready_pod("e"),
    ]
    running = running_pods(pods)
    seen = observation(5.0, 4, running, {"a": 10.0, "b": 20.0, "d": 1.0}, {"a": 1.0, "e": 2.0})
    assert set(running) == {"a", "b", "e"}
    assert seen == Observation(5.0, 4, {"a": 10.0}, 1.0, ("b", "e"))


def test_metric_values_read_the_adapters_answer():
    answer = {
        "kind": "MetricValueList",
        "items": [
            {"describedObject": {"kind": "Pod", "name": "a"}, "value": "40000"},
            {"describedObject": {"kind": "Pod", "name": "b"}, "value": "1500m"},
        ],
    }
    assert metric_values(answer) == {"a": 40000.0, "b": 1.5}
    with pytest.raises(ValueError):
        metric_values({"kind": "Status"})


def test_a_scale_down_not_carried_out_leaves_the_memory_as_held():
    settings = HysteresisSettings(target_per_pod=40000.0)
    seen = Observation(at=400.0, replicas=4, pods=LOAD, connect_rate=0.0)
    decision, _ = decide(settings, Memory(below_since=10.0, total_below_since=65000.0), seen)
    assert decision.scales_down
    before = Memory(below_since=10.0, total_below_since=65000.0, last_replicas=4)
    assert not_acted(settings, before, seen) == before
    assert not_acted(settings, Memory(last_replicas=3), seen) == Memory(
        below_since=400.0, total_below_since=65000.0, last_replicas=4, last_scale_event_at=400.0
    )


@pytest.mark.parametrize(
    ("last", "key", "now", "posted"),
    [(None, "a", 0.0, True), (("a", 0.0), "a", 299.0, False), (("a", 0.0), "a", 300.0, True),
     (("a", 0.0), "b", 1.0, True)],
    ids=["first", "same-within-repeat", "same-after-repeat", "changed"],
)  # fmt: skip
def test_when_an_event_is_posted(last, key, now, posted):
    assert should_post(last, key, now, 300.0) is posted


def test_message_shape_masks_the_numbers():
    assert message_shape("below the threshold for 15 s of 300 s, 31.5k back") == (
        "below the threshold for # s of # s, #k back"
    )
