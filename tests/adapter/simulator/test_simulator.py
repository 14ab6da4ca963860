"""The simulator: its client model, its scenarios, and the comparison it exists to make."""

from __future__ import annotations

import json
import math

import pytest

from adapter.simulator import cli
from adapter.simulator.backoff import SEED_CLIENT, delay_shares, duration_ms
from adapter.simulator.cluster import Cluster, ClusterSettings
from adapter.simulator.run import VARIANTS, simulate
from adapter.simulator.scenarios import SCENARIOS, ScenarioError, load_csv
from adapter.simulator.summary import Summary, summarize

COMPARED = ("hpa-default", "hpa-fast", "controller")


@pytest.mark.parametrize(
    ("attempt", "r", "ms"),
    [(0, 0.05, 9_500), (0, 0.15, 11_500), (0, 0.99, 19_900), (1, 0.05, 19_000),
     (1, 0.55, 20_000), (5, 0.0, 20_000)],
    ids=["first-minus", "first-plus", "first-top", "second-minus", "second-capped", "late"],
)  # fmt: skip
def test_backoff_is_socket_io_clients(attempt, r, ms):
    # backo2: deviation = floor(r * jitter * ms), minus when floor(r * 10) is even; cap at max.
    assert duration_ms(SEED_CLIENT, attempt, r) == pytest.approx(ms)


def test_the_first_reconnect_spreads_over_20_seconds_and_later_ones_pile_at_the_cap():
    first = delay_shares(SEED_CLIENT, 0)
    assert len(first) == 20 and sum(first) == pytest.approx(1)
    assert sum(first[:10]) == pytest.approx(0.5, abs=0.01)
    assert delay_shares(SEED_CLIENT, 2)[-1] > 0.75


def test_a_drained_pods_clients_all_come_back_within_the_drain_and_backoff():
    cluster = Cluster(ClusterSettings())
    pods = [cluster.add_pod(0, 30_000, ready=True) for _ in range(3)]
    cluster.delete_pod(pods[0], 0)
    for second in range(60):
        cluster.step(second)
    assert sum(pod.connections for pod in cluster.pods) == pytest.approx(90_000)
    assert cluster.lost == 0 and cluster.drained == pytest.approx(30_000)
    assert [pod.name for pod in cluster.pods] == ["pod-2", "pod-3"]


def test_clients_with_nowhere_to_go_give_up_after_ten_attempts():
    cluster = Cluster(ClusterSettings(max_per_pod=1_000))
    cluster.add_pod(0, 1_000, ready=True)
    cluster.arrive(500, 0)
    for second in range(400):
        cluster.step(second)
    assert cluster.lost == pytest.approx(500)


def test_the_replicaset_removes_pending_then_cheapest_then_newest_pods():
    cluster = Cluster(ClusterSettings())
    old, cheap, new = (cluster.add_pod(t, 10_000, ready=True) for t in range(3))
    cheap.deletion_cost = -1
    pending = cluster.add_pod(5)
    cluster.scale_to(2, 10)
    assert [pod.name for pod in cluster.members] == [old.name, new.name]
    assert pending.draining_since == cheap.draining_since == 10


def summaries(name: str) -> dict[str, Summary]:
    scenario = SCENARIOS[name]()
    return {variant.name: summarize(simulate(scenario, variant)) for variant in VARIANTS}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_controller_never_flaps_loses_nobody_and_costs_about_what_stock_costs(name):
    results = summaries(name)
    controller, stock = results["controller"], results["hpa-default"]
    assert controller.flaps == 0
    assert controller.clients_lost == 0
    # No worse than stock, give or take 1% of a pod (the variants take different paths).
    assert controller.peak_load_ratio <= stock.peak_load_ratio + 0.01
    assert controller.replica_minutes <= 1.10 * stock.replica_minutes
    assert controller.sockets_dropped <= stock.sockets_dropped


def test_where_the_stock_hpa_flaps_the_controller_does_not():
    plateau, seed_max = summaries("plateau"), summaries("seed-max")
    assert plateau["hpa-fast"].scale_events > 10, "a fast scale-down chases every swing"
    assert plateau["controller"].scale_events == 0
    assert seed_max["hpa-default"].flaps == 1, "scaled down on the way up, then back up"
    assert seed_max["controller"].flaps == 0


def test_rebalancing_trades_reconnects_for_balance_after_a_pod_is_replaced():
    results = summaries("seed-pod-kill")
    plain, rebalanced = results["controller"], results["controller-rebalance"]
    assert plain.minutes_over_1_2 > 30, "existing sockets stay on the old pods"
    assert rebalanced.minutes_over_1_2 < 1
    assert rebalanced.sockets_dropped > plain.sockets_dropped


def test_a_day_of_a_16m_cluster_runs_and_every_user_is_served():
    scenario = SCENARIOS["day"]()
    assert scenario.seconds >= 86_000 and max(scenario.users) >= 1_500_000
    timeline = simulate(scenario, VARIANTS[2])
    assert timeline.lost == 0
    assert max(timeline.replicas) == 20


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "header"), ("time,count\n0,1\n", "header"), ("second,users\n0,5\n", "two rows"),
     ("second,users\n0,5\n10,x\n", ":3: not numbers"), ("second,users\n0,5\n0,6\n", "increase"),
     ("second,users\n0,5\n10,-1\n", ">= 0"), ("second,users\n0,5,6\n", "2 columns")],
    ids=["empty", "wrong-header", "one-row", "not-a-number", "not-increasing", "negative",
         "three-columns"],
)  # fmt: skip
def test_bad_csv_scenarios_say_where(text, message):
    with pytest.raises(ScenarioError, match=message):
        load_csv("mine", text)


def test_a_csv_scenario_is_interpolated_per_second():
    scenario = load_csv("mine", "second,users\n0,0\n10,100000\n20,100000\n")
    assert scenario.seconds == 21 and scenario.users[5] == 50_000
    assert scenario.initial_replicas == 2


def test_the_command_prints_tables_and_writes_pngs_and_json(tmp_path, capsys):
    csv_file = tmp_path / "evening.csv"
    csv_file.write_text("second,users\n0,80000\n600,150000\n1800,150000\n")
    code = cli.main(["--scenario", "game-end", "--csv", str(csv_file), "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr()
    assert "game-end" in out.out and "evening" in out.out and "clients lost" in out.out
    assert "#" in out.err, "a progress bar"
    for name in ("game-end", "evening"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        document = json.loads((tmp_path / f"{name}.json").read_text())
        for variant in COMPARED:
            fields = document["variants"][variant]
            assert set(fields) >= {
                "scale_events", "flaps", "peak_load_ratio", "minutes_over_1_2",
                "replica_minutes", "oracle_replica_minutes", "clients_lost",
            }  # fmt: skip
            assert not math.isnan(fields["peak_load_ratio"])


def test_the_command_refuses_a_bad_csv_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("when,who\n")
    assert cli.main(["--csv", str(bad)]) == 2
    assert "bad: the first row must be the header" in capsys.readouterr().err
    assert cli.main(["--csv", str(tmp_path / "missing.csv")]) == 2
