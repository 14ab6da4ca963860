"""Keep-alive HTTP/1.1 GETs of workers' /metrics, for the scrape rounds.

`adapter.scrape` reads every worker of every pod twice a second: 4000 endpoints for 1000 pods.
aiohttp's client spent ~0.15 ms of CPU per request on URL objects, header maps, a stream
reader and its response class (bench/adapter.py; the round over 4000 endpoints took 5 to 8 s and
every read timed out), where a scrape needs one fixed request written to a connection kept open
and one response body read back. Here each endpoint has at most one connection, kept between
rounds, carrying one request at a time; httptools (llhttp, the parser uvicorn serves with) reads
the response, chunked or not. A response that breaks the rules costs its connection: it is
closed, and the next round opens a new one.

Every failure is a `FetchFailed` with the reading's error code and a fixed message: nothing a
target sends is quoted except its status code.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from adapter.aggregate import Reason


class FetchFailed(Exception):
    def __init__(self, kind: Reason, message: str) -> None:
        super().__init__(message)
        self.kind: Reason = kind


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    request: bytes

    @classmethod
    def of(cls, url: str, user_agent: str, query: str = "") -> Endpoint:
        """`query` is added to the URL's own (`name[]=...`: the families to send)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"not an http:// URL: {url!r}")
        port = parts.port or 80
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        path = parts.path or "/"
        asked = "&".join(part for part in (parts.query, query) if part)
        if asked:
            path += "?" + asked
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {user_agent}\r\n"
            "Accept: text/plain\r\n\r\n"
        )
        return cls(parts.hostname, port, request.encode("ascii"))


class _Connection(asyncio.Protocol):
    """One connection to one endpoint; one request in flight at most. What comes of a request
    is set on the future `send` was given; a cancelled future closes the connection, since the
    answer may still come and must not be read as the next request's."""

    def __init__(self, max_body_bytes: int, url: str, fetcher: Fetcher) -> None:
        self._limit = max_body_bytes
        self._url = url
        self._fetcher = fetcher
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._header: bytes = b""
        self.reusable = False
        # Whether any byte of the current answer came: a kept connection the endpoint closed
        # while idle fails before one does, and the request is safe to send again (`again`).
        self._answered = False
        self._again = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.reusable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        again, waiter = self._again and not self._answered, self._end()
        if waiter is None:
            return
        if again:
            self._fetcher.connect(self._url, waiter)
        else:
            waiter.set_exception(FetchFailed("http", "connection closed before the response ended"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted to frame
            return
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(FetchFailed("http", "malformed HTTP response"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None:
            self.close()  # an answer nobody asked for: what follows cannot be framed

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-length":
            self._header = value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status != 200:
            self._fail(FetchFailed("http_status", f"HTTP {status}"))
        elif self._header.isdigit() and int(self._header) > self._limit:
            self._fail(FetchFailed("too_large", f"body over {self._limit} bytes"))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limit:
            self._fail(FetchFailed("too_large", f"body over {self._limit} bytes"))
        elif self._waiter is not None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        waiter = self._end()
        if waiter is None:
            return
        if not self._parser.should_keep_alive():
            self.close()
        elif self.reusable:
            self._fetcher.idle(self._url, self)
        waiter.set_result(body)

    # Ours

    def send(self, request: bytes, waiter: asyncio.Future[bytes], again: bool) -> None:
        """Write `request`; its body or `FetchFailed` goes to `waiter`. With `again`, a
        connection lost before any byte of the answer came sends the request once more on a
        new connection (`Fetcher.connect`) instead of failing."""
        assert self._transport is not None and self._waiter is None
        self._waiter, self._again = waiter, again
        self._body, self._size, self._header, self._answered = [], 0, b"", False
        waiter.add_done_callback(self._settled)
        self._transport.write(request)

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _settled(self, waiter: asyncio.Future[bytes]) -> None:
        """Only ever called for a waiter set from outside (cancelled): `_end` takes this
        callback off before the connection sets one itself."""
        if waiter is self._waiter:
            self._end()

    def _end(self) -> asyncio.Future[bytes] | None:
        """The request in flight's waiter, if it still waits; none is in flight after."""
        waiter, self._waiter = self._waiter, None
        self._body = []
        if waiter is None:
            return None
        waiter.remove_done_callback(self._settled)
        if waiter.done():  # cancelled, and its callback not run yet: as `_settled` would
            self.close()
            return None
        return waiter

    def _fail(self, error: FetchFailed) -> None:
        """End the request in flight with `error`; the connection goes with it."""
        waiter = self._end()
        self.close()
        if waiter is not None:
            waiter.set_exception(error)


class Fetcher:
    """Kept connections by URL. Used from one event loop."""

    def __init__(
        self, max_body_bytes: int, user_agent: str = "pushscale-adapter", query: str = ""
    ) -> None:
        self._limit = max_body_bytes
        self._user_agent = user_agent
        self._query = query
        self._endpoints: dict[str, Endpoint] = {}
        self._idle: dict[str, _Connection] = {}
        self._connecting: set[asyncio.Task[None]] = set()

    def get(self, url: str) -> asyncio.Future[bytes]:
        """The body of a 200 answer to GET `url`, or `FetchFailed`. A future, not a
        coroutine: a round starts one per endpoint, and a task each cost a quarter of the
        round's CPU at 4000 endpoints (bench/adapter.py). Cancelled (a timeout), the future
        closes its request's connection."""
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        try:
            endpoint = self._endpoint(url)
        except ValueError as exc:
            # This URL's reading only (a bug of ours upstream), not the caller's whole round.
            waiter.set_exception(exc)
            return waiter
        kept = self._idle.pop(url, None)
        if kept is not None and kept.reusable:
            kept.send(endpoint.request, waiter, again=True)
        else:
            self.connect(url, waiter)
        return waiter

    def connect(self, url: str, waiter: asyncio.Future[bytes]) -> None:
        """Send GET `url` on a new connection, its outcome to `waiter`."""
        task = asyncio.ensure_future(self._connect(url, waiter))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        # Given up on while connecting (an endpoint that takes its time to accept).
        waiter.add_done_callback(lambda _: task.cancel())

    def idle(self, url: str, connection: _Connection) -> None:
        """Keep `connection` for the next GET of `url`. Two targets with one URL (pods whose
        port ranges overlap) read it concurrently over two connections; one of them is kept."""
        extra = self._idle.setdefault(url, connection)
        if extra is not connection:
            connection.close()

    def keep_only(self, urls: set[str]) -> None:
        """Close the kept connections of endpoints not in `urls` (pods gone since)."""
        for url in [url for url in self._idle if url not in urls]:
            self._idle.pop(url).close()
        for url in [url for url in self._endpoints if url not in urls]:
            del self._endpoints[url]

    def close(self) -> None:
        for connection in self._idle.values():
            connection.close()
        self._idle.clear()
        for task in self._connecting:
            task.cancel()

    def _endpoint(self, url: str) -> Endpoint:
        endpoint = self._endpoints.get(url)
        if endpoint is None:
            endpoint = self._endpoints[url] = Endpoint.of(url, self._user_agent, self._query)
        return endpoint

    async def _connect(self, url: str, waiter: asyncio.Future[bytes]) -> None:
        endpoint = self._endpoint(url)
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._limit, url, self), endpoint.host, endpoint.port
            )
        except ConnectionRefusedError:
            error = FetchFailed("refused", "connection refused")
        except OSError as exc:
            error = FetchFailed("refused", f"cannot connect: {exc.strerror or 'error'}")
        except asyncio.CancelledError:
            waiter.cancel()  # the fetcher closed: nobody is left to wait
            raise
        else:
            if waiter.done():
                connection.close()
            else:
                connection.send(endpoint.request, waiter, again=False)
            return
        if not waiter.done():
            waiter.set_exception(error)
