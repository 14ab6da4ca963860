"""adapter.scrape against real HTTP servers: real pushscale workers and bad targets.

The bad targets are a real local aiohttp server with one route per way a target can fail.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from adapter.aggregate import pod_reading
from adapter.fetch import Fetcher
from adapter.scrape import Scraper, ScrapeSettings, Target, served_query
from adapter.selectors import parse_selector
from pushserver.exposition import Combine
from tests.conftest import RunningServer


async def _huge(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(64):  # 4 MiB, without a content-length
        await response.write(b"#" * 65536 + b"\n")
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="socket_io_connected 1\n")


def _answer(**response: object) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(**response)  # type: ignore[arg-type]

    return handler


ROUTES = {
    "/good": _answer(text="socket_io_connected 7\n"),
    "/malformed": _answer(text="socket_io_connected seven\n"),
    "/html": _answer(text="<html>oops</html>", content_type="text/html"),
    "/error": _answer(status=500, text="boom"),
    "/latin1": _answer(body=b"socket_io_connected 7\n# caf\xe9\n"),
    "/nan": _answer(text="socket_io_connected NaN\n"),
}


@pytest.fixture
async def bad_targets() -> AsyncIterator[str]:
    app = web.Application()
    for path, handler in ROUTES.items():
        app.router.add_get(path, handler)
    app.router.add_get("/huge", _huge)
    app.router.add_get("/slow", _slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_bad_targets_each_get_their_reason_and_the_good_one_is_read(bad_targets):
    targets = [
        Target("ns", "pod", i, url)
        for i, url in enumerate(
            [f"{bad_targets}{path}" for path in
             ("/good", "/malformed", "/html", "/error", "/huge", "/slow")]
            + [f"http://127.0.0.1:{_dead_port()}/metrics"]
        )
    ]  # fmt: skip
    settings = ScrapeSettings(timeout_seconds=0.5, max_body_bytes=64 * 1024)
    loop = asyncio.get_running_loop()
    started = loop.time()
    readings = await Scraper(settings).round(targets)
    elapsed = loop.time() - started
    reasons = [readings[t].error for t in targets]
    assert readings[targets[0]].samples == {"socket_io_connected": {(): 7.0}}
    assert reasons[0] is None
    assert reasons[1] is not None and reasons[1].startswith("malformed metrics text")
    assert reasons[2] is not None and reasons[2].startswith("malformed metrics text")
    assert reasons[3] == "HTTP 500"
    assert reasons[4] == "body over 65536 bytes"
    assert reasons[5] == "timeout after 0.5 s"
    assert reasons[6] == "connection refused"
    # Concurrent: the slow target costs the round its timeout once, not per target.
    assert elapsed < 2.0


async def test_a_real_pod_sums_exactly_and_a_stopped_worker_leaves_it_out(
    push_server: RunningServer, viewers
):
    await viewers(push_server.url, 30)
    targets = [
        Target("ns", push_server.name, w, push_server.metrics_url(w)) for w in push_server.workers
    ]
    scraper = Scraper(ScrapeSettings())
    readings = await scraper.round(targets)
    whole = pod_reading(2, list(readings.values()), "socket_io_connected",
                        parse_selector(None), Combine.SUM)  # fmt: skip
    assert whole.value == 30

    dead = Target("ns", push_server.name, 1, f"http://127.0.0.1:{_dead_port()}/metrics")
    readings = await scraper.round([targets[0], dead])
    partial = pod_reading(2, list(readings.values()), "socket_io_connected",
                          parse_selector(None), Combine.SUM)  # fmt: skip
    assert partial.value is None
    assert partial.reason == "worker 1: connection refused"

    # Worker 0's port read as worker 1 (overlapping port ranges): never counted as worker 1.
    crossed = Target("ns", push_server.name, 1, push_server.metrics_url(0))
    readings = await scraper.round([targets[0], crossed])
    await scraper.close()
    assert (readings[crossed].error_kind, readings[crossed].error) == (
        "wrong_worker", "the endpoint answers as worker 0",
    )  # fmt: skip
    assert readings[targets[0]].error_kind is None


async def test_a_worker_asked_for_the_read_families_sends_only_those(push_server: RunningServer):
    url = push_server.metrics_url(push_server.workers[0])
    asked, everything = Fetcher(1 << 20, query=served_query()), Fetcher(1 << 20)
    try:
        body = (await asked.get(url)).decode()
        full = (await everything.get(url)).decode()
    finally:
        asked.close()
        everything.close()
    assert "process_cpu_seconds_total" in full and "python_info" in full
    assert "socket_io_connected " in body and "pushscale_worker_info{" in body
    assert "process_" not in body and "python_" not in body, "the worker honours name[]"
    assert len(body) < len(full)


async def test_the_threaded_scraper_reads_on_its_own_loop_and_answers_the_same(
    push_server: RunningServer, viewers
):
    from adapter.scrape import ThreadedScraper

    await viewers(push_server.url, 4)
    targets = [
        Target("ns", push_server.name, w, push_server.metrics_url(w)) for w in push_server.workers
    ]
    scraper = ThreadedScraper(ScrapeSettings())
    try:
        readings = await scraper.round(targets)
    finally:
        scraper.close()
    whole = pod_reading(2, list(readings.values()), "socket_io_connected",
                        parse_selector(None), Combine.SUM)  # fmt: skip
    assert whole.value == 4


async def test_closing_the_threaded_scraper_ends_a_round_in_flight(bad_targets):
    from adapter.scrape import ThreadedScraper

    scraper = ThreadedScraper(ScrapeSettings(timeout_seconds=5))
    in_flight = asyncio.create_task(scraper.round([Target("ns", "slow", 0, f"{bad_targets}/slow")]))
    await asyncio.sleep(0.2)
    scraper.close()
    # Cancelled with the scrape thread's loop, not left pending on a loop that is gone (a
    # waiter that later gave up would then call into the closed loop).
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(in_flight, 2)


async def test_untrusted_bodies_carry_their_code(bad_targets):
    paths = ("/good", "/malformed", "/latin1", "/nan", "/error", "/huge", "/slow")
    targets = [Target("ns", "pod", i, f"{bad_targets}{path}") for i, path in enumerate(paths)]
    settings = ScrapeSettings(timeout_seconds=0.5, max_body_bytes=64 * 1024)
    readings = await Scraper(settings).round(targets)
    kinds = [readings[t].error_kind for t in targets]
    assert kinds == [None, "malformed", "malformed", "not_finite", "http_status", "too_large",
                     "timeout"]  # fmt: skip
    assert readings[targets[2]].error == "malformed metrics text: not UTF-8 (byte 27 of 29)"


async def test_a_bug_while_reading_one_target_is_its_internal_error_only(
    bad_targets, monkeypatch, caplog
):
    import adapter.scrape
    from adapter.samples import parse_samples as real

    def buggy(text: str):
        if "7" in text:
            raise KeyError("a bug")
        return real(text)

    monkeypatch.setattr(adapter.scrape, "parse_samples", buggy)
    targets = [
        Target("ns", "a", 0, f"{bad_targets}/good"),
        Target("ns", "b", 0, f"{bad_targets}/nan"),
    ]
    scraper = Scraper(ScrapeSettings(timeout_seconds=0.5))
    for _ in range(3):
        readings = await scraper.round(targets)
    assert (readings[targets[0]].error_kind, readings[targets[0]].error) == (
        "internal_error", "internal error: KeyError"
    )  # fmt: skip
    assert readings[targets[1]].error_kind == "not_finite", "the other target is read as ever"
    logged = [r.getMessage() for r in caplog.records if r.name == "pushscale.adapter.scrape"]
    assert len(logged) == 1 and "KeyError: 'a bug' at" in logged[0], logged


@pytest.fixture
async def counted() -> AsyncIterator[tuple[str, list[int]]]:
    """An endpoint whose first answer comes after 0.8 s and later ones at once, and that
    notes the client port of every request it is asked: one port per connection."""
    peers: list[int] = []

    async def late_once(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        if len(peers) == 1:
            await asyncio.sleep(0.8)
        return web.Response(text="socket_io_connected 3\n")

    async def never(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername")[1])
        await asyncio.sleep(30)
        return web.Response(text="socket_io_connected 3\n")

    app = web.Application()
    app.router.add_get("/late-once", late_once)
    app.router.add_get("/never", never)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", peers
    await runner.cleanup()


async def test_a_read_past_its_round_keeps_its_connection_for_the_next(counted):
    base, peers = counted
    target = Target("ns", "pod", 0, f"{base}/late-once")
    scraper = Scraper(ScrapeSettings(timeout_seconds=0.5))
    try:
        first = await scraper.round([target])
        assert first[target].error == "timeout after 0.5 s"
        again = await scraper.round([target])  # the first read is still waiting
        assert again[target].error == "timeout after 0.5 s"
        await asyncio.sleep(0.5)  # its answer has come
        third = await scraper.round([target])
    finally:
        await scraper.close()
    samples = third[target].samples
    assert samples is not None and dict(samples["socket_io_connected"]) == {(): 3.0}
    assert len(peers) == 2 and len(set(peers)) == 1, "one connection, not one per round"


async def test_an_endpoint_that_never_answers_holds_one_connection_for_a_while(
    counted, monkeypatch
):
    import adapter.scrape

    monkeypatch.setattr(adapter.scrape, "LATE_SECONDS", 0.6)
    base, peers = counted
    target = Target("ns", "pod", 0, f"{base}/never")
    scraper = Scraper(ScrapeSettings(timeout_seconds=0.2))
    try:
        for _ in range(5):  # a round every 0.25 s, as Rounds.run paces them
            assert (await scraper.round([target]))[target].error_kind == "timeout"
            await asyncio.sleep(0.25)
    finally:
        await scraper.close()
    # A read each time one is given up (after LATE_SECONDS), not one per round (5).
    assert len(set(peers)) == len(peers)
    assert 1 < len(peers) < 5
