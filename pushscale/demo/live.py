"""The refresh loop of `pushscale demo`: read, show, then change what the viewers do.

`pushscale.demo.cli` runs `Live.run()` once the stack is up. Each refresh it reads the
adapter's metrics API and debug view over HTTPS and the viewers' own counts
(`pushscale.loadgen.LoadGenerator.status`), and shows them side by side (`pushscale.demo.board`).
Every `--move-every` seconds it moves viewers: it sheds a quarter of the busiest worker's
sockets (`POST /admin/shed`; the viewers reconnect after socket.io's backoff, to either pod), or
lets a tenth of the viewers leave while as many new ones join. `--scenario` replays a simulator
scenario (`adapter.simulator.scenarios`) at reduced scale: the viewers follow its users(t).
"""

from __future__ import annotations

import asyncio
import math
import shutil
import ssl
from pathlib import Path
from typing import Any, TextIO

import httpx

from adapter.simulator.scenarios import SCENARIOS
from pushscale.demo import board
from pushscale.demo.settings import DemoSettings
from pushscale.demo.stack import Stack


class Screen:
    """Progress lines, then a table redrawn in place on a terminal (one line a refresh
    otherwise)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._drawn_rows = 0

    def say(self, text: str) -> None:
        self.out.write(f"[demo] {text}\n")
        self.out.flush()
        self._drawn_rows = 0

    def show(self, lines: list[str]) -> None:
        columns = max(20, shutil.get_terminal_size().columns)
        up = f"\x1b[{self._drawn_rows}F" if self._drawn_rows else ""
        self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()
        self._drawn_rows = sum(max(1, math.ceil(len(line) / columns)) for line in lines)


class Live:
    """The refresh loop: targets, moves, snapshots, the screen."""

    def __init__(self, settings: DemoSettings, stack: Stack, screen: Screen) -> None:
        self.settings = settings
        self.stack = stack
        self.screen = screen
        self.tally = board.Tally()
        self.note = "no move yet" + (
            f" (every {settings.move_every_seconds:g} s)" if settings.move_every_seconds else ""
        )
        self.curls = board.curl_lines(stack.cert_path, stack.adapter_port)
        self.users: tuple[float, ...] = ()
        if settings.scenario is not None:
            self.users = SCENARIOS[settings.scenario]().users
        self.duration = settings.duration_seconds
        if self.duration is None and self.users:
            self.duration = len(self.users) / settings.speed
        self.current_target = 0

    def target(self, elapsed: float) -> int:
        if not self.users:
            return self.settings.clients
        return board.scenario_target(self.users, self.settings.clients, self.settings.speed,
                                     elapsed)  # fmt: skip

    async def run(self, stopping: asyncio.Event) -> tuple[int, str]:
        """Refresh until `--duration` ends or `stopping` is set: (0, the summary), or (1, why
        the demo cannot go on)."""
        s, loop = self.settings, asyncio.get_running_loop()
        context = ssl.create_default_context(cafile=str(self.stack.cert_path))
        if self.users:
            self.screen.say(
                f"replaying {s.scenario}: {len(self.users)} s at {s.speed:g}x, peak "
                f"{max(self.users):,.0f} users scaled to {s.clients} viewers"
            )
        if not self.screen.tty:
            self.screen.say("the custom metrics API, as the HPA reads it:")
            for curl in self.curls:
                self.screen.say(f"  {curl}")
        started = loop.time()
        self.current_target = self.target(0.0)
        await self.stack.viewers.set_target(self.current_target)
        next_move = started + s.move_every_seconds
        refreshes = 0
        end = started + self.duration if self.duration else math.inf
        async with httpx.AsyncClient(verify=context, timeout=3) as http:
            while loop.time() < end:
                refreshes += 1
                wake = min(started + refreshes * s.refresh_seconds, end)
                try:
                    async with asyncio.timeout(max(0.0, wake - loop.time())):
                        await stopping.wait()
                    break
                except TimeoutError:
                    pass
                # Read first, change after: a change made right after a refresh is in the
                # adapter's next round (one a second) before the next refresh reads it.
                now = loop.time()
                try:
                    snapshot = await self.snapshot(http, now - started, self.current_target)
                except (OSError, TimeoutError, ValueError) as exc:
                    gone = self.stack.died() or f"the load generator did not answer ({exc!r})"
                    return 1, gone
                self.tally.add(snapshot)
                if (why := self.stack.died()) is not None:
                    return 1, why
                if self.screen.tty:
                    self.screen.show(board.frame(snapshot, self.note, self.curls,
                                                 Path(s.run_dir)))  # fmt: skip
                else:
                    self.screen.say(board.line(snapshot))
                if now >= end:
                    break
                if (target := self.target(now - started)) != self.current_target:
                    self.current_target = target
                    await self.stack.viewers.set_target(target)
                if s.move_every_seconds and now >= next_move:
                    next_move += s.move_every_seconds
                    await self.move()
                    if not self.screen.tty:
                        self.screen.say(self.note)
        return 0, board.summary(self.tally, loop.time() - started)

    async def move(self) -> None:
        self.tally.moves += 1
        last = self.tally.last
        if self.tally.moves % 2 == 1 and last is not None:
            await self.shed(last)
        else:
            count = max(1, self.current_target // 10)
            await self.stack.viewers.churn(count)
            self.note = f"move {self.tally.moves}: {count} viewers left and as many new ones join"

    async def shed(self, last: board.Snapshot) -> None:
        """Shed a quarter of the busiest worker's sockets: a transport close each, so the
        viewers reconnect after socket.io's backoff, to either pod."""
        busiest = max(
            ((pod, i, value or 0) for pod in last.pods for i, value in enumerate(pod.workers)),
            key=lambda item: item[2], default=None,
        )  # fmt: skip
        if busiest is None or busiest[2] < 1:
            self.note = f"move {self.tally.moves}: nothing to shed yet"
            return
        view, worker, value = busiest
        pod = next(p for p in self.stack.pods if p.name == view.name)
        count = max(1, value // 4)
        try:
            async with httpx.AsyncClient(timeout=3) as admin:
                response = await admin.post(
                    pod.metrics_url(worker, "admin/shed"), json={"count": count},
                    headers={"authorization": f"Bearer {self.stack.admin_token}"},
                )  # fmt: skip
            shed = response.json().get("shedding", 0) if response.status_code == 202 else None
        except (httpx.HTTPError, ValueError) as exc:
            self.note = f"move {self.tally.moves}: the shed request failed: {exc}"
            return
        if shed is None:
            self.note = f"move {self.tally.moves}: shed refused ({response.status_code})"
            return
        o = self.settings
        self.note = (
            f"move {self.tally.moves}: shed {shed} sockets of {view.name} worker {worker} "
            f"(POST /admin/shed); their viewers see `transport close` and reconnect after "
            f"socket.io's backoff (0-{o.reconnect_delay_max_seconds:g} s) to either pod"
        )

    async def snapshot(
        self, http: httpx.AsyncClient, elapsed: float, target: int
    ) -> board.Snapshot:
        pods_url, _, debug_url = board.api_urls(self.stack.adapter_port)
        answers = await asyncio.gather(
            http.get(pods_url), http.get(debug_url, params={"format": "json"}),
            self.stack.viewers.status(), return_exceptions=True,
        )  # fmt: skip
        pods_answer, debug_answer, load = answers
        if isinstance(load, BaseException):
            raise load
        values, error = _pod_values(pods_answer)
        debug = _json(debug_answer) or {}
        by_name = {p.get("name"): p for p in debug.get("pods") or ()}
        views = []
        for pod in self.stack.pods:
            seen = by_name.get(pod.name) or {}
            workers = tuple(w.get("value") for w in seen.get("workers") or ())
            views.append(board.PodView(
                pod.name, load.connected.get(pod.port, 0), values.get(pod.name),
                None if seen.get("served", True) else seen.get("reason"),
                tuple(None if w is None else int(w) for w in workers),
            ))  # fmt: skip
        round_ = debug.get("round") or {}
        return board.Snapshot(
            elapsed, target, load, tuple(views), round_.get("number"),
            round_.get("ageSeconds"), error,
        )  # fmt: skip


def _json(answer: object) -> dict[str, Any] | None:
    if isinstance(answer, httpx.Response) and answer.status_code == 200:
        document: dict[str, Any] = answer.json()
        return document
    return None


def _pod_values(answer: object) -> tuple[dict[str, int], str | None]:
    """The metrics API's per-pod values, or why there are none."""
    if isinstance(answer, BaseException):
        return {}, f"unreachable ({type(answer).__name__})"
    assert isinstance(answer, httpx.Response)
    if answer.status_code != 200:
        try:
            message = answer.json().get("message", "")
        except ValueError:
            message = answer.text[:100]
        return {}, f"{answer.status_code} {message}"
    values = {}
    for item in answer.json().get("items", ()):
        quantity = str(item["value"])
        value = float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
        values[item["describedObject"]["name"]] = round(value)
    return values, None
