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
    """One connection to one endpoint; one request in flight at most."""

    def __init__(self, max_body_bytes: int) -> None:
        self._limit = max_body_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[bytes] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._header: bytes = b""
        self.reusable = False
        # Whether any byte of the current answer came: a kept connection the endpoint closed
        # while idle fails before one does, and the request is safe to send again.
        self.answered = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.reusable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(FetchFailed("http", "connection closed before the response ended"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted to frame
            return
        self.answered = True
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
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if not self._parser.should_keep_alive():
            self.close()
        if not waiter.done():
            waiter.set_result(b"".join(self._body))
        self._body = []

    # Ours

    def send(self, request: bytes) -> asyncio.Future[bytes]:
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._body, self._size, self._header, self.answered = [], 0, b"", False
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.reusable = False
        if self._transport is not None:
            self._transport.close()

    def _fail(self, error: FetchFailed) -> None:
        """End the request in flight with `error`; the connection goes with it."""
        waiter, self._waiter = self._waiter, None
        self._body = []
        self.close()
        if waiter is not None and not waiter.done():
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

    async def get(self, url: str) -> bytes:
        """The body of a 200 answer to GET `url`, or `FetchFailed`. Cancelled (a timeout), the
        request's connection is closed: its answer may still come and must not be read as the
        next request's."""
        endpoint = self._endpoints.get(url)
        if endpoint is None:
            endpoint = self._endpoints[url] = Endpoint.of(url, self._user_agent, self._query)
        kept = self._idle.pop(url, None)
        if kept is not None and kept.reusable:
            try:
                return self._keep(url, kept, await self._send(kept, endpoint))
            except FetchFailed:
                if kept.answered:
                    raise
        connection = await self._connect(endpoint)
        return self._keep(url, connection, await self._send(connection, endpoint))

    async def _send(self, connection: _Connection, endpoint: Endpoint) -> bytes:
        try:
            return await connection.send(endpoint.request)
        except BaseException:
            connection.close()
            raise

    def _keep(self, url: str, connection: _Connection, body: bytes) -> bytes:
        if not connection.reusable:
            return body
        # Two targets with one URL (pods whose port ranges overlap) read it concurrently over
        # two connections; one of them is kept.
        extra = self._idle.setdefault(url, connection)
        if extra is not connection:
            connection.close()
        return body

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

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._limit), endpoint.host, endpoint.port
            )
        except ConnectionRefusedError:
            raise FetchFailed("refused", "connection refused") from None
        except OSError as exc:
            raise FetchFailed("refused", f"cannot connect: {exc.strerror or 'error'}") from None
        return connection
