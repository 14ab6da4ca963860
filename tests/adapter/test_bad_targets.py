"""The adapter beside targets that misbehave, each a real local HTTP server on its own port.

Every way a worker endpoint can fail costs only its own pod: the healthy pod is still served,
exactly, and the debug view names each failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from tests.adapter.conftest import AdapterFactory, settles, static_pod
from tests.conftest import ServerFactory, free_port_block

PODS = "/apis/custom.metrics.k8s.io/v1beta2/namespaces/live/pods/*/socket_io_connected"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(64):  # 4 MiB without a content-length
        await response.write(b"#" * 65536 + b"\n")
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(3)
    return web.Response(text="socket_io_connected 1\n")


def _answer(**response: object) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(**response)  # type: ignore[arg-type]

    return handler


BAD: dict[str, Handler] = {
    "malformed": _answer(text="socket_io_connected seven\n"),
    "html": _answer(text="<html><body>login</body></html>", content_type="text/html"),
    "error": _answer(status=500, text="boom"),
    "huge": _huge,
    "slow": _slow,
    "other-app": _answer(text="# TYPE http_requests_total counter\nhttp_requests_total 5\n"),
}


@pytest.fixture
async def bad_pods() -> AsyncIterator[dict[str, int]]:
    """One single-worker "pod" per way of failing: name → its metrics port."""
    runners: list[web.AppRunner] = []
    ports: dict[str, int] = {}
    for name, handler in BAD.items():
        app = web.Application()
        app.router.add_get("/metrics", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port_block(1)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        ports[name] = port
    ports["refused"] = free_port_block(1)
    yield ports
    for runner in runners:
        await runner.cleanup()


async def test_the_healthy_pod_is_served_and_every_bad_one_is_explained(
    bad_pods: dict[str, int], server_factory: ServerFactory, adapter_factory: AdapterFactory,
    viewers,
):  # fmt: skip
    healthy = server_factory(name="healthy", workers=2, metrics_port=free_port_block(2))
    await viewers(healthy.url, 3)
    pods = [static_pod("healthy", healthy.metrics_ports[0], 2)]
    pods += [static_pod(name, port, 1) for name, port in bad_pods.items()]
    adapter = adapter_factory(pods, extra=["--authentication-skip", "--max-scrape-bytes", "65536"])

    async def served() -> dict[str, str]:
        response = await adapter.get(PODS)
        assert response.status_code == 200, response.text
        return {i["describedObject"]["name"]: i["value"] for i in response.json()["items"]}

    await settles(served, {"healthy": "3"})
    debug = (await adapter.get("/debug/pods", params={"format": "json"})).json()
    reasons = {pod["name"]: pod["reason"] for pod in debug["pods"]}
    assert reasons["healthy"] is None
    assert reasons["malformed"].startswith("worker 0: malformed metrics text")
    assert reasons["html"].startswith("worker 0: malformed metrics text")
    assert reasons["error"] == "worker 0: HTTP 500"
    assert reasons["huge"] == "worker 0: body over 65536 bytes"
    assert reasons["slow"] == "worker 0: timeout after 0.5 s"
    assert reasons["other-app"] == "worker 0 does not serve socket_io_connected"
    assert reasons["refused"] == "worker 0: connection refused"
    # A round with a slow target still ends on time: the value stays fresh.
    assert debug["round"]["durationSeconds"] < 1.5
    metrics = (await adapter.get("/metrics")).text
    for kind in ("malformed", "http_status", "too_large", "timeout", "refused"):
        assert f'pushscale_adapter_scrape_errors_total{{reason="{kind}"}}' in metrics
