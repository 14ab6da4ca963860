"""A real browser (headless Chromium) with socket.io-client's browser bundle against our server.

The test serves `tests/js/viewer.html` and the 4.x bundle from an HTTP server of its own, so the
page's origin is not the push server's, as on a real site: the polling transport then depends
on the push server's CORS answers, and the websocket on its Origin check. The page joins a game,
receives a publish, has the worker it is on drained under it, reconnects by itself and receives
a second publish; it POSTs what it saw to the test's server, and the test asserts on that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web

from tests.conftest import RunningServer
from tests.pushserver.client_records import ClientRecords

JS = Path(__file__).resolve().parents[1] / "js"
BUNDLE = JS / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
BUNDLE_V2 = JS / "node_modules" / "socket.io-client-v2" / "dist" / "socket.io.js"
CHROMIUM = "/usr/bin/chromium"


class PageServer(ClientRecords):
    """The page's origin: serves the page and the bundle, and collects the page's reports."""

    def __init__(self, url: str) -> None:
        super().__init__("the browser")
        self.url = url
        # Chromium's log, whose console lines say why a request failed (CORS, say), which the
        # page itself cannot see.
        self.browser_log: Path | None = None

    def page_url(self, push: RunningServer, game_id: str, kind: str) -> str:
        query = urlencode({"push": push.url, "game": game_id, "kind": kind})
        return f"{self.url}/viewer.html?{query}"

    async def wait(self, check: Callable[[], bool], what: str, timeout: float = 10) -> None:
        try:
            await super().wait(check, what, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the browser's console said {self.console()}") from None

    def console(self) -> list[str]:
        if self.browser_log is None or not self.browser_log.exists():
            return []
        lines = self.browser_log.read_text(errors="replace").splitlines()
        said = dict.fromkeys(line.partition("] ")[2] for line in lines if ":CONSOLE:" in line)
        return list(said)[:3]


@pytest.fixture
async def page_server() -> AsyncIterator[PageServer]:
    if not (BUNDLE.exists() and BUNDLE_V2.exists()):
        pytest.fail("tests/js/node_modules is missing: run scripts/setup")
    page: PageServer

    async def report(request: web.Request) -> web.Response:
        page.records.append(json.loads(await request.read()))
        return web.Response(status=204)

    async def viewer(request: web.Request) -> web.FileResponse:
        return web.FileResponse(JS / "viewer.html")

    async def bundle(request: web.Request) -> web.FileResponse:
        return web.FileResponse(BUNDLE)

    async def bundle_v2(request: web.Request) -> web.FileResponse:
        return web.FileResponse(BUNDLE_V2)

    async def wiring(request: web.Request) -> web.FileResponse:
        # A module script must come as JavaScript; `.mjs` is not in every MIME table.
        return web.FileResponse(JS / "wire.mjs", headers={"Content-Type": "text/javascript"})

    app = web.Application()
    app.router.add_get("/viewer.html", viewer)
    app.router.add_get("/socket.io.min.js", bundle)
    app.router.add_get("/socket.io-v2.js", bundle_v2)
    app.router.add_get("/wire.mjs", wiring)
    app.router.add_post("/report", report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        page = PageServer(f"http://127.0.0.1:{port}")
        yield page
    finally:
        await runner.cleanup()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Open a URL in headless Chromium (and say where its log goes); every browser is gone
    at the end, pass or fail."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup")
    started: list[subprocess.Popen[bytes]] = []

    def open_page(url: str) -> Path:
        profile = tmp_path / f"chromium-{len(started)}"
        log_path = tmp_path / f"chromium-{len(started)}.log"
        with log_path.open("wb") as log:
            started.append(
                subprocess.Popen(
                    [
                        CHROMIUM,
                        "--headless=new",
                        # As root (CI, this machine) Chromium's sandbox cannot start.
                        "--no-sandbox",
                        "--disable-gpu",
                        # Containers often have a 64 MiB /dev/shm, too small for Chromium.
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        # The reconnect timers must run on time in a page nobody looks at.
                        "--disable-background-timer-throttling",
                        "--disable-renderer-backgrounding",
                        # Console messages (a CORS refusal among them) in the log.
                        "--enable-logging=stderr",
                        f"--user-data-dir={profile}",
                        url,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Its own process group: Chromium's zygote and renderers go with it.
                    start_new_session=True,
                )
            )
        return log_path

    try:
        yield open_page
    finally:
        for process in started:
            _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group this test started (by its id): the browser and its children."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is None:
        process.wait()


def worker_of(ack: dict[str, Any]) -> int:
    """The index of the worker that sent a join ack (`"pod0/1"` → 1)."""
    return int(ack["worker"].rpartition("/")[2])


# The 2.x client polls with credentials (engine.io-client 3's `withCredentials` defaults to
# true), so its polling needs the Origin echoed and `Access-Control-Allow-Credentials: true`;
# 4.x does not send them, so `Access-Control-Allow-Origin: *` does for it.
@pytest.mark.parametrize("kind", ["default", "websocket", "v2"])
async def test_a_browser_joins_receives_and_survives_a_drain_of_its_worker(
    push_server, page_server, browser, kind
):
    opens_on = "websocket" if kind == "websocket" else "polling"
    game = f"browser-{kind}"
    page_server.browser_log = browser(page_server.page_url(push_server, game, kind))
    # Chromium starts in seconds, slower on a busy machine.
    await page_server.wait(lambda: bool(page_server.of("ack")), "the join ack", timeout=30)
    first = page_server.of("ack")[0]["ack"]
    assert first["ok"] and first["room"] == f"game:{game}"
    assert page_server.of("open")[0]["transport"] == opens_on
    # Either way a browser ends on websocket: default options upgrade from polling.
    await page_server.wait(lambda: page_server.transport == "websocket", "the upgrade")
    assert (await push_server.publish(game, "score", {"home": 1})).status_code == 202
    await page_server.wait(lambda: bool(page_server.of("event")), "the first publish")

    os.kill(push_server.worker_pids[worker_of(first)], signal.SIGTERM)
    await page_server.wait(lambda: bool(page_server.of("disconnect")), "the drain")
    # Not `io server disconnect`, after which the browser would never reconnect.
    assert page_server.of("disconnect")[0]["reason"] == "transport close"
    await page_server.wait(lambda: len(page_server.of("ack")) == 2, "the rejoin", timeout=20)
    assert page_server.of("ack")[1]["ack"]["room"] == f"game:{game}"
    assert page_server.of("open")[-1]["transport"] == opens_on
    await page_server.wait(lambda: page_server.transport == "websocket", "the second upgrade")
    assert (await push_server.publish(game, "score", {"home": 2})).status_code == 202
    await page_server.wait(lambda: len(page_server.of("event")) == 2, "the second publish")

    assert [e["data"] for e in page_server.of("event")] == [{"home": 1}, {"home": 2}]
    assert page_server.of("page_error") == []
