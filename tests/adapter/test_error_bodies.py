"""Error bodies stay small whatever the request carried: a 100 KB selector, metric or name is
quoted by a short prefix and its length, through the real adapter process.

httpx refuses URLs past 64 KB, so these requests go out through `http.client`, which sends
what it is given, over the same verified TLS. uvicorn's HTTP parser (llhttp) refuses a request
line past 80 KB itself, with a short plain-text 400 before the app sees it; so each case runs
at 60 KB, which the app answers with a `Status`, and at 100 KB.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.adapter.conftest import RunningAdapter, start_adapter

V2 = "/apis/custom.metrics.k8s.io/v1beta2"
LIVE = V2 + "/namespaces/live"
HUGE = "a" * 60_000
# Valid, matching nothing: the 404 names it.
HUGE_SELECTOR = "app in (" + ",".join(f"v{i}" for i in range(6_000)) + ")"
CASES = [
    (LIVE + "/pods/*/socket_io_connected", {"labelSelector": "=" + HUGE}, 400),
    (LIVE + "/pods/*/socket_io_connected", {"labelSelector": HUGE + "=("}, 400),
    (LIVE + "/pods/*/socket_io_connected", {"labelSelector": HUGE_SELECTOR}, 404),
    (LIVE + "/pods/*/socket_io_connected", {"metricLabelSelector": "!" + HUGE}, 400),
    (LIVE + "/pods/*/" + HUGE, {}, 404),
    (LIVE + "/pods/" + HUGE + "/socket_io_connected", {}, 404),
    (V2 + "/namespaces/" + HUGE + "/pods/*/socket_io_connected", {}, 404),
    (V2.replace("v1beta2", HUGE) + "/namespaces/live/pods/*/socket_io_connected", {}, 404),
    (LIVE + "/" + HUGE + "/x/socket_io_connected", {}, 404),
    (LIVE + "/services/" + HUGE + "/socket_io_connected", {}, 404),
    (LIVE + "/deployments.apps/" + HUGE + "/socket_io_connected", {}, 404),
    (V2 + "/namespaces/" + HUGE + "/metrics/socket_io_connected", {}, 404),
    ("/debug/pods", {"metric": HUGE}, 404),
    ("/debug/pods", {"metricLabelSelector": HUGE + "!"}, 400),
    ("/" + HUGE, {}, 404),
]
IDS = [
    "label-selector", "label-selector-unbalanced", "valid-label-selector", "metric-selector",
    "metric", "pod", "namespace", "version", "resource", "service", "deployment",
    "namespace-sum", "debug-metric", "debug-metric-selector", "path",
]  # fmt: skip


def raw_get(adapter: RunningAdapter, path: str, params: dict[str, Any]) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(adapter.cert_dir / "apiserver.crt"))
    connection = http.client.HTTPSConnection("localhost", adapter.port, context=context, timeout=10)
    try:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        connection.request("GET", urllib.parse.quote(path) + query)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAdapter]:
    # One adapter for every case: none changes its state.
    running = start_adapter(tmp_path_factory.mktemp("error-bodies"), [])
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


@pytest.mark.parametrize(("path", "params", "code"), CASES, ids=IDS)
async def test_an_error_quotes_at_most_a_short_prefix_of_huge_input(
    adapter: RunningAdapter, path, params, code
):
    got, body = await asyncio.to_thread(raw_get, adapter, path, params)
    assert got == code, body[:300]
    status = json.loads(body)
    assert (status["kind"], status["code"]) == ("Status", code)
    assert len(body) < 1024, status["message"]
    assert "a" * 65 not in status["message"] and "v5999" not in status["message"]
    if not path.startswith("/" + HUGE):  # an unknown path has a fixed message
        assert "…" in status["message"], status["message"]


@pytest.mark.parametrize(("path", "params", "code"), CASES, ids=IDS)
async def test_input_past_the_http_parsers_limit_is_refused_as_briefly(
    adapter: RunningAdapter, path, params, code
):
    bigger = {key: value.replace(HUGE, HUGE + "a" * 40_000) for key, value in params.items()}
    if bigger == params:
        bigger["pad"] = "b" * 40_000
    got, body = await asyncio.to_thread(raw_get, adapter, path.replace(HUGE, HUGE * 2), bigger)
    assert got == 400 and len(body) < 1024, body[:300]
