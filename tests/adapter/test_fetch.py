"""adapter.fetch against a real TCP server that answers each request with scripted bytes.

A scrape target is outside input: whatever bytes it sends, a read ends as a body or a
`FetchFailed` with a fixed message, and a connection that answered wrongly is never read again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.fetch import Fetcher, FetchFailed


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def chunked(*chunks: bytes) -> bytes:
    parts = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + parts + b"0\r\n\r\n"


@dataclass
class Scripted:
    """Answers the n-th request with `answers[n]` (the last one again past the end); a
    `None` answer closes the connection instead; `close_after` closes after answering."""

    answers: list[bytes | None]
    close_after: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    url: str = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                request = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(request)
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    script = Scripted([ok(b"socket_io_connected 1\n")])
    server = await asyncio.start_server(script.serve, "127.0.0.1", 0)
    script.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
    yield script
    await asyncio.sleep(0.05)  # handlers see their clients' close and close their side
    server.close()


async def fails(fetcher: Fetcher, url: str) -> FetchFailed:
    with pytest.raises(FetchFailed) as caught:
        await fetcher.get(url)
    return caught.value


async def test_one_kept_connection_carries_every_round(scripted: Scripted) -> None:
    fetcher = Fetcher(1024)
    for _ in range(5):
        assert await fetcher.get(scripted.url) == b"socket_io_connected 1\n"
    assert scripted.connections == 1
    request = scripted.requests[0]
    assert request.startswith(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:")
    fetcher.close()


async def test_connection_close_and_an_idle_close_reconnect_without_an_error(
    scripted: Scripted,
) -> None:
    scripted.answers = [ok(b"a", "Connection: close")]
    fetcher = Fetcher(1024)
    assert await fetcher.get(scripted.url) == b"a"
    assert await fetcher.get(scripted.url) == b"a"
    assert scripted.connections == 2
    # The endpoint closes a kept connection while it is idle (its keep-alive timeout): the
    # next read goes out again on a new connection instead of failing.
    scripted.answers, scripted.close_after = [ok(b"b")], True
    scripted.requests.clear()
    assert await fetcher.get(scripted.url) == b"b"
    await asyncio.sleep(0.05)
    assert await fetcher.get(scripted.url) == b"b"
    fetcher.close()


async def test_chunked_bodies_are_joined(scripted: Scripted) -> None:
    scripted.answers = [chunked(b"socket_io_", b"connected 3\n")]
    fetcher = Fetcher(1024)
    assert await fetcher.get(scripted.url) == b"socket_io_connected 3\n"
    fetcher.close()


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (ok(b"x" * 2000), "too_large", "body over 1024 bytes"),
        (chunked(*[b"y" * 500] * 5), "too_large", "body over 1024 bytes"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "http_status", "HTTP 404"),
        (b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n", "http_status",
         "HTTP 302"),
        (b"hello, this is not HTTP\r\n\r\n", "http", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "http",
         "connection closed before the response ended"),
        (None, "http", "connection closed before the response ended"),
    ],
)  # fmt: skip
async def test_a_bad_answer_is_its_code_and_a_fixed_message(
    scripted: Scripted, answer: bytes | None, kind: str, message: str
) -> None:
    scripted.answers, scripted.close_after = [answer], answer is not None and b"short" in answer
    failed = await fails(Fetcher(1024), scripted.url)
    assert (failed.kind, str(failed)) == (kind, message)


async def test_a_connection_that_answered_wrongly_is_not_read_again(scripted: Scripted) -> None:
    # Two answers to one request: the second would be read as the next request's.
    scripted.answers = [ok(b"first") + ok(b"unasked"), ok(b"second")]
    fetcher = Fetcher(1024)
    assert await fetcher.get(scripted.url) == b"first"
    await asyncio.sleep(0.05)
    assert await fetcher.get(scripted.url) == b"second"
    assert scripted.connections == 2
    fetcher.close()


async def test_a_timed_out_request_does_not_leave_its_answer_for_the_next() -> None:
    late = asyncio.Event()
    connections = 0

    async def first_slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        slow = connections == 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if slow:
                    await late.wait()
                writer.write(ok(b"stale" if slow else b"fresh"))
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(first_slow, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
    fetcher = Fetcher(1024)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await fetcher.get(url)
    late.set()
    await asyncio.sleep(0.05)
    assert await fetcher.get(url) == b"fresh"
    assert connections == 2, "the timed-out connection was closed, not kept"
    fetcher.close()
    await asyncio.sleep(0.05)
    server.close()


async def test_refused_and_unreachable() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    failed = await fails(Fetcher(1024), f"http://127.0.0.1:{port}/metrics")
    assert (failed.kind, str(failed)) == ("refused", "connection refused")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(answer=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda b, tail: ok(b) + tail, st.binary(max_size=200), st.binary(max_size=50)),
    st.builds(lambda status, b: b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
              % (status, len(b), b), st.integers(100, 999), st.binary(max_size=50)),
))  # fmt: skip
async def test_any_bytes_end_as_a_body_or_a_fetch_failure(
    scripted: Scripted, answer: bytes
) -> None:
    scripted.answers, scripted.close_after = [answer], True
    fetcher = Fetcher(256)
    try:
        async with asyncio.timeout(2):
            body = await fetcher.get(scripted.url)
    except FetchFailed as failed:
        assert failed.kind in {"http", "http_status", "too_large"}
        assert len(str(failed)) < 60, "a fixed message, nothing of the answer quoted"
    else:
        assert len(body) <= 256
    fetcher.close()
