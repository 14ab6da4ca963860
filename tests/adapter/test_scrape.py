"""adapter.scrape against real HTTP servers: real pushscale workers and bad targets.

The bad targets are a real local aiohttp server with one route per way a target can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from adapter.aggregate import pod_reading
from adapter.errors import Unavailable
from adapter.fetch import Fetcher
from adapter.scrape import Scraper, ScrapeSettings, Target, served_query
from adapter.scrapeproc import ProcessScraper
from adapter.selectors import parse_selector
from pushserver.exposition import Combine
from tests.conftest import RunningServer, process_gone


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


async def test_a_target_whose_url_cannot_be_read_is_its_internal_error_only(bad_targets):
    # A port past 65535: a bug upstream of the scraper, that must cost this target only.
    targets = [
        Target("ns", "a", 0, f"{bad_targets}/good"),
        Target("ns", "b", 0, "http://127.0.0.1:99999/metrics"),
    ]
    scraper = Scraper(ScrapeSettings(timeout_seconds=0.5))
    try:
        readings = await scraper.round(targets)
    finally:
        await scraper.close()
    assert readings[targets[0]].error is None
    assert (readings[targets[1]].error_kind, readings[targets[1]].error) == (
        "internal_error", "internal error: ValueError"
    )  # fmt: skip


# The scrape process (adapter.scrapeproc): the same reads, done by a child process.


@pytest.fixture
async def process_scraper() -> AsyncIterator[ProcessScraper]:
    scraper = ProcessScraper(
        ScrapeSettings(timeout_seconds=0.5, max_body_bytes=64 * 1024),
        grace_seconds=1.0,
        restart_seconds=0.5,
    )
    await scraper.start()
    yield scraper
    await scraper.close()


async def test_the_scrape_process_reads_real_workers_as_the_scraper_does(
    push_server: RunningServer, viewers, process_scraper
):
    await viewers(push_server.url, 4)
    targets = tuple(
        Target("ns", push_server.name, w, push_server.metrics_url(w)) for w in push_server.workers
    )
    for _ in range(3):  # the first sends every layout, the later ones name them
        readings = await process_scraper.round(targets)
        assert list(readings) == list(targets)
        whole = pod_reading(2, list(readings.values()), "socket_io_connected",
                            parse_selector(None), Combine.SUM)  # fmt: skip
        assert whole.value == 4
    in_process = Scraper(ScrapeSettings())
    try:
        here = await in_process.round(targets)
    finally:
        await in_process.close()
    for target in targets:
        there, local = readings[target].samples, here[target].samples
        assert there is not None and local is not None
        for name in ("socket_io_connected", "pushscale_worker_info"):
            assert dict(there[name]) == dict(local[name])


async def test_bad_targets_through_the_scrape_process_carry_their_code(
    bad_targets, process_scraper
):
    paths = ("/good", "/malformed", "/latin1", "/nan", "/error", "/huge", "/slow")
    targets = tuple(Target("ns", "pod", i, f"{bad_targets}{path}") for i, path in enumerate(paths))
    readings = await process_scraper.round(targets)
    assert [readings[t].error_kind for t in targets] == [
        None, "malformed", "malformed", "not_finite", "http_status", "too_large", "timeout",
    ]  # fmt: skip
    assert readings[targets[2]].error == "malformed metrics text: not UTF-8 (byte 27 of 29)"
    assert dict(readings[targets[0]].samples["socket_io_connected"]) == {(): 7.0}


async def test_a_killed_scrape_process_fails_its_round_at_once_and_a_new_one_takes_over(
    bad_targets, process_scraper, caplog
):
    slow = (Target("ns", "slow", 0, f"{bad_targets}/slow"),)
    good = (Target("ns", "good", 0, f"{bad_targets}/good"),)
    first = process_scraper.pid
    assert first is not None
    in_flight = asyncio.create_task(process_scraper.round(slow))
    await asyncio.sleep(0.2)
    os.kill(first, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="the scrape process is gone"):
        await in_flight
    assert time.monotonic() - started < 0.5, "not left to the round's timeout"
    with pytest.raises(Unavailable, match="restarting"):
        await process_scraper.round(good)  # within restart_seconds of the last start
    await asyncio.sleep(0.5)
    readings = await process_scraper.round(good)
    assert readings[good[0]].error_kind is None
    assert process_scraper.pid not in (None, first)
    assert any("scrape process is gone" in r.getMessage() for r in caplog.records)


async def test_a_hung_scrape_process_is_replaced(bad_targets, process_scraper):
    good = (Target("ns", "good", 0, f"{bad_targets}/good"),)
    hung = process_scraper.pid
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)
    try:
        with pytest.raises(Unavailable, match=r"took over 1\.5 s"):
            await process_scraper.round(good)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    assert process_gone(hung), "killed, not left stopped"
    await asyncio.sleep(0.5)
    assert (await process_scraper.round(good))[good[0]].error_kind is None


async def test_closing_ends_a_round_in_flight_and_the_process(bad_targets, process_scraper):
    pid = process_scraper.pid
    assert pid is not None
    slow = (Target("ns", "slow", 0, f"{bad_targets}/slow"),)
    in_flight = asyncio.create_task(process_scraper.round(slow))
    await asyncio.sleep(0.2)
    await process_scraper.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(in_flight, 2)
    assert process_gone(pid)


def test_the_scrape_process_dies_with_the_adapter():
    with subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert not process_gone(child)
            parent.kill()  # SIGKILL: nothing of ours runs in the parent any more
            parent.wait()
            deadline = time.monotonic() + 5
            while not process_gone(child):
                assert time.monotonic() < deadline, "the scrape process outlived the adapter"
                time.sleep(0.05)
        finally:
            parent.kill()


_PARENT = """
import asyncio, time
from adapter.scrape import ScrapeSettings
from adapter.scrapeproc import ProcessScraper

async def main():
    scraper = ProcessScraper(ScrapeSettings())
    await scraper.start()
    print(scraper.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_round_given_up_on_costs_the_next_one_nothing(bad_targets, process_scraper):
    good = tuple(Target("ns", "good", w, f"{bad_targets}/good") for w in range(3))
    slow = Target("ns", "slow", 0, f"{bad_targets}/slow")
    given_up = asyncio.create_task(process_scraper.round((*good, slow)))
    await asyncio.sleep(0.1)
    given_up.cancel()  # a caller that stopped waiting; the child still sends that round
    with contextlib.suppress(asyncio.CancelledError):
        await given_up
    for _ in range(2):
        readings = await process_scraper.round(good)
        assert [dict(readings[t].samples["socket_io_connected"]) for t in good] == [{(): 7.0}] * 3


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
