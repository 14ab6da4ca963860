"""Values a worker serves that the adapter cannot trust, through the real API.

Each bad "pod" is two real local HTTP servers on consecutive ports, as a pod's workers are:
worker 0 healthy, worker 1 serving one bad body. The whole pod is left out with its reason
code, in the debug view (text and JSON) and in `pushscale_adapter_pods_left_out_total`; the
healthy pods beside them are answered exactly, with a 200. A bug met while reading one pod
(`internal_error`) is provoked in-process, with the app served over real HTTP by uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from adapter.aggregate import REASONS, WorkerReading
from adapter.answers import Round
from adapter.app import AppState, create_app, logged_report
from adapter.instruments import Instruments
from adapter.pods import Pod
from tests.adapter.conftest import AdapterFactory, SyncedPods, settles, static_pod
from tests.conftest import free_port_block

PODS = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/live/pods/*/socket_io_connected"
GAUGE = "# HELP socket_io_connected Number of currently connected sockets\n" \
        "# TYPE socket_io_connected gauge\n"  # fmt: skip


def healthy(worker: int, connected: int) -> str:
    return (
        GAUGE + f"socket_io_connected {connected}\n"
        "# TYPE socket_io_connect_total counter\n"
        f"socket_io_connect_total {connected * 3}\n"
        "# TYPE pushscale_worker_info gauge\n"
        f'pushscale_worker_info{{pod="x",worker="{worker}",version="0.1.0"}} 1\n'
    )


# name → (worker 1's body, the code the pod is left out with)
UNTRUSTED: dict[str, tuple[bytes, str]] = {
    "nan": ((GAUGE + "socket_io_connected NaN\n").encode(), "not_finite"),
    "plus-inf": ((GAUGE + "socket_io_connected +Inf\n").encode(), "not_finite"),
    "minus-inf": ((GAUGE + "socket_io_connected -Inf\n").encode(), "not_finite"),
    "negative": ((GAUGE + "socket_io_connected -5\n").encode(), "negative"),
    "negative-counter": (b"socket_io_connect_total -1\nsocket_io_connected 1\n", "negative"),
    "past-2-53": ((GAUGE + "socket_io_connected 1e300\n").encode(), "out_of_range"),
    "duplicate": (
        (GAUGE + "socket_io_connected 5\nsocket_io_connected 5\n").encode(),
        "duplicate_series",
    ),
    "as-counter": (b"# TYPE socket_io_connected counter\nsocket_io_connected 5\n", "wrong_type"),
    "as-histogram": (
        b"# TYPE socket_io_connected histogram\nsocket_io_connected 5\n",
        "wrong_type",
    ),
    "binary": (bytes(range(256)) * 16, "malformed"),
    "huge-line": (b"socket_io_connected " + b"9" * 60_000 + b"z\n", "malformed"),
}
HEALTHY = {"healthy-a": (1200, 34), "healthy-b": (7, 0)}


@contextlib.asynccontextmanager
async def serving(bodies: list[bytes]) -> AsyncIterator[int]:
    """One HTTP server per body on consecutive ports; yields the first port."""
    base = free_port_block(len(bodies))
    runners = []
    try:
        for offset, body in enumerate(bodies):

            async def metrics(request: web.Request, body: bytes = body) -> web.Response:
                return web.Response(body=body, content_type="text/plain")

            app = web.Application()
            app.router.add_get("/metrics", metrics)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", base + offset).start()
        yield base
    finally:
        for runner in runners:
            await runner.cleanup()


def left_out_counts(exposition: str) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "pushscale_adapter_pods_left_out"
        for sample in family.samples
        if sample.name == "pushscale_adapter_pods_left_out_total"
    }


async def test_an_untrusted_value_leaves_its_pod_out_and_the_others_exact(
    adapter_factory: AdapterFactory,
):
    async with contextlib.AsyncExitStack() as stack:
        pods = []
        for name, counts in HEALTHY.items():
            bodies = [healthy(w, n).encode() for w, n in enumerate(counts)]
            pods.append(static_pod(name, await stack.enter_async_context(serving(bodies)), 2))
        for name, (body, _) in UNTRUSTED.items():
            port = await stack.enter_async_context(serving([healthy(0, 100).encode(), body]))
            pods.append(static_pod(name, port, 2))
        adapter = adapter_factory(
            pods, extra=["--authentication-skip", "--max-scrape-bytes", "65536"]
        )

        async def served() -> dict[str, str]:
            response = await adapter.get(PODS, params={"labelSelector": "app=push"})
            assert response.status_code == 200, response.text
            return {i["describedObject"]["name"]: i["value"] for i in response.json()["items"]}

        await settles(served, {"healthy-a": "1234", "healthy-b": "7"})
        debug = (await adapter.get("/debug/pods", params={"format": "json"})).json()
        by_name = {pod["name"]: pod for pod in debug["pods"]}
        text = (await adapter.get("/debug/pods")).text
        for name, (_, code) in UNTRUSTED.items():
            pod = by_name[name]
            assert (pod["served"], pod["value"], pod["reasonCode"]) == (False, None, code), name
            assert pod["reason"].startswith("worker 1: "), pod["reason"]
            assert len(pod["reason"]) < 300, "a huge body makes a short reason"
            assert [w["errorCode"] for w in pod["workers"]] == [None, code]
            assert f"live/{name} " in text and f"[{code}]" in text
        for name in HEALTHY:
            assert by_name[name]["served"] and by_name[name]["reasonCode"] is None
        # A single pod answers 404 with its reason; an object sum with it, 503; never a 500.
        single = await adapter.get(PODS.replace("*", "nan"))
        assert single.status_code == 404 and "pod nan: worker 1:" in single.json()["message"]
        namespace = await adapter.get(PODS.replace("pods/*", "metrics"))
        assert namespace.status_code == 503

        left_out = left_out_counts((await adapter.get("/metrics")).text)
        assert set(left_out) == set(REASONS), "every reason is exported from the start"
        for code in {code for _, code in UNTRUSTED.values()}:
            assert left_out[code] >= 1, code
        assert left_out["internal_error"] == 0
        assert left_out["timeout"] == 0 and left_out["refused"] == 0


# The internal_error path: samples whose reading raises, as a bug some value provoked would.


class Poisoned(dict[str, dict[tuple[tuple[str, str], ...], float]]):
    def get(self, *args, **kwargs):
        raise ZeroDivisionError("poisoned")


GOOD = Pod("live", "good", {"app": "push"}, "10.0.0.1", 9100, 1)
BAD = Pod("live", "bad", {"app": "push"}, "10.0.0.2", 9100, 1)


class Rounds:
    def __init__(self, clock: float) -> None:
        readings = {
            GOOD.key: (WorkerReading(0, clock, {"socket_io_connected": {(): 41.0}}),),
            BAD.key: (WorkerReading(0, clock, Poisoned()),),
        }
        self.history = (Round(1, clock, 0.01, (GOOD, BAD), readings),)

    async def fresh(self) -> tuple[Round, ...]:
        return self.history


@pytest.fixture
def in_process() -> Iterator[tuple[AppState, logging.Logger]]:
    logger = logging.getLogger("tests.adapter.internal")
    now = 10_000.0
    state = AppState(
        Rounds(now), SyncedPods((GOOD, BAD)), Instruments(), None, 60.0, 2.0, clock=lambda: now,
        report=logged_report(logger),
    )  # fmt: skip
    yield state, logger


async def test_a_bug_in_one_pods_reading_is_that_pods_internal_error_not_a_500(
    in_process, caplog: pytest.LogCaptureFixture
):
    state, logger = in_process
    server = uvicorn.Server(
        uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        caplog.set_level(logging.ERROR, logger.name)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):
                answer = await client.get(PODS)
                assert answer.status_code == 200, answer.text
                assert [(i["describedObject"]["name"], i["value"]) for i in answer.json()["items"]]\
                    == [("good", "41")]  # fmt: skip
            as_json = (await client.get("/debug/pods", params={"format": "json"})).json()
            bad = next(pod for pod in as_json["pods"] if pod["name"] == "bad")
            assert (bad["reasonCode"], bad["reason"]) == (
                "internal_error", "internal error: ZeroDivisionError"
            )  # fmt: skip
            text = (await client.get("/debug/pods")).text
            assert "LEFT OUT: internal error: ZeroDivisionError [internal_error]" in text
            deployment = await client.get(PODS.replace("pods/*", "metrics"))
            assert deployment.status_code == 503
        state.instruments.observe_round(state.rounds.history[-1], state.report)
        counts = left_out_counts(state.instruments.exposition().decode())
        assert counts["internal_error"] == 1
    finally:
        server.should_exit = True
        await task
    lines = [r.getMessage() for r in caplog.records if r.name == logger.name]
    # Seven readings of the bad pod, one line: the limiter holds the rest for a minute.
    assert len(lines) == 1, lines
    assert (
        "internal error reading pod live/bad (left out): ZeroDivisionError: poisoned at" in lines[0]
    )
    assert all(r.exc_info is None for r in caplog.records), "no traceback for a pod's bug"
