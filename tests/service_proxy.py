"""A stand-in for a Kubernetes Service in front of push server "pods".

Like kube-proxy with endpoints readiness, it sends each *new* TCP connection to one of the
backends whose `GET /readyz` answered 200 at the last probe (every 100 ms), round-robin, and
leaves established connections alone. Connections are piped byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import httpx

PROBE_SECONDS = 0.1


class ServiceProxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = list(backends)
        self.ready: list[int] = []
        self.routed: dict[int, int] = {}
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._probe: asyncio.Task[None] | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> ServiceProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._probe = asyncio.create_task(self._probe_forever())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, backend: int) -> None:
        self.backends.append(backend)

    async def _probe_forever(self) -> None:
        async with httpx.AsyncClient(timeout=0.5) as http:
            while True:
                ready = []
                for port in list(self.backends):
                    with contextlib.suppress(httpx.HTTPError):
                        response = await http.get(f"http://127.0.0.1:{port}/readyz")
                        if response.status_code == 200:
                            ready.append(port)
                self.ready = ready
                await asyncio.sleep(PROBE_SECONDS)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ready = self.ready
        if not ready:
            writer.close()
            return
        port = ready[next(self._turn) % len(ready)]
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        self.routed[port] = self.routed.get(port, 0) + 1
        for task in (
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        # One side closed: close the other, as a Service's conntrack entry would end.
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
