"""What one publish costs a worker per recipient, to the microsecond: the fan-out's own code on
real sockets, without the load generator's noise or /proc's 10 ms ticks.

    .venv/bin/python -m bench.fanout [--sockets 10000] [--rounds 30] [--polling 0]

This process is one worker's socket.io side, pinned to CPU 0: a real `PushServer` on a real
`Engine` and `RoomFanout` (no Redis needed: nothing here publishes), serving real websockets
(`wsprotocol.EngineProtocol` on uvloop's TCP transports) on loopback. A drainer process on
CPU 1 (this module, `--drain`) opens `--sockets` websockets, connects socket.io, joins the
room `game:bench`, then reads and discards whatever arrives. `--polling` adds that many
long-polling sessions (`polling.PollingTransport`) to the room, emptied after each round.

Each round delivers one event to the room in one of three ways, interleaved:

- `local`: `RoomFanout._deliver`, what the worker that took the `POST /publish` runs after
  Redis took the message;
- `redis`: `RoomFanout._receive` of the message as another worker or pod publishes it (another
  host id): `fanout_messages.parse_message`, then the same delivery;
- `floor`: a bare loop of `os.write(fd, frame)` over the same sockets, the least any Python
  server can do per recipient (one C call, one `write` syscall): what is left above it is our
  own Python;
- `uvloop`: a bare loop of uvloop's `transport.write(frame)` over the same transports, what a
  Python server spends when each recipient's frame goes through its event loop's transport.

Printed per way: the median over `--rounds` of the CPU time per recipient
(`time.process_time`, user + kernel, nanosecond clock) and of the wall time, and the user/kernel
split summed over all rounds (`getrusage`; the kernel samples it at its ticks, so only sums
over many rounds are worth quoting), and from it the user µs per recipient. The kernel's part
is the send syscalls, the same for every server; the user µs per recipient times 10 000 is
the user-space cost of a 10k-room emit that issue 14's ≤ 20 ms is about.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvloop

from pushserver import websocket as ws
from pushserver.engine import Engine, stream_fd
from pushserver.fanout import RoomFanout
from pushserver.fanout_messages import RoomMessage, encode_message
from pushserver.polling import PollingTransport
from pushserver.push import PushServer
from pushserver.redis_access import RedisAccess
from pushserver.settings import ServerSettings
from pushserver.stats import WorkerStats
from pushserver.wsprotocol import EngineProtocol, protocol_factory

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0
DRAINER_CPU = 1
ROOM = "game:bench"
# Another worker's (or pod's) python-socketio host id: `uuid4().hex`.
OTHER_HOST = "0123456789abcdef0123456789abcdef"
WAYS = ("local", "redis", "floor", "uvloop")


# -- the drainer (the clients) ----------------------------------------------------------------


def _client_frame(text: str) -> bytes:
    """A masked text frame (RFC 6455 §5.3), with a zero mask: the payload goes as it is."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def drain(port: int, sockets: int) -> None:
    """Open `sockets` websockets into the room, say so on stdout, then read until stdin ends."""
    os.sched_setaffinity(0, {DRAINER_CPU})
    hello = (
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n\r\n"
        + _client_frame("40")
        + _client_frame('42["joinByGameId",{"gameId":"bench"}]')
    )  # fmt: skip
    poller = select.epoll()
    held: dict[int, socket.socket] = {}
    for _ in range(sockets):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(hello)
        client.setblocking(False)
        held[client.fileno()] = client
        poller.register(client.fileno(), select.EPOLLIN)
    poller.register(sys.stdin.fileno(), select.EPOLLIN)
    print("open", flush=True)
    while True:
        for fd, _ in poller.poll():
            if fd == sys.stdin.fileno():
                return
            try:
                if not held[fd].recv(1 << 16):
                    poller.unregister(fd)
            except BlockingIOError:
                pass


# -- the worker side --------------------------------------------------------------------------


def _rusage() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def _serve(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    settings = ServerSettings(workers=1, ping_interval_seconds=3600, ping_timeout_seconds=3600)
    stats = WorkerStats()
    fanout = RoomFanout(RedisAccess("redis://127.0.0.1:1"), stats, "bench")
    push = PushServer(settings, stats, fanout, worker=0, refusal=lambda: None)
    # Marked as started, so the first connection does not start a Redis listener.
    push.manager_initialized = True
    engine: Engine = push.eio
    engine.start()
    state = SimpleNamespace(connections=set())
    make = protocol_factory(engine)
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    server = await loop.create_server(lambda: make(None, state, None), sock=listener)
    drainer = subprocess.Popen(
        [sys.executable, "-m", "bench.fanout", "--drain", str(listener.getsockname()[1]),
         "--sockets", str(args.sockets)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert drainer.stdout is not None
        await loop.run_in_executor(None, drainer.stdout.readline)
        polling = [_polling_member(engine) for _ in range(args.polling)]
        wanted = args.sockets + args.polling
        deadline = time.monotonic() + 120
        while _room_size(fanout) < wanted:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {_room_size(fanout)} of {wanted} joined {ROOM}")
            await asyncio.sleep(0.1)
        return await _rounds(args, fanout, engine, stats, polling)
    finally:
        assert drainer.stdin is not None
        drainer.stdin.close()
        drainer.wait(30)
        server.close()


def _polling_member(engine: Engine) -> PollingTransport:
    """A long-polling session in the room, through the same socket.io path as a client's."""
    transport = PollingTransport(engine)
    session = engine.open(transport, {"QUERY_STRING": "EIO=4&transport=polling"})
    transport.session = session
    engine.received(session, "40")
    engine.received(session, '42["joinByGameId",{"gameId":"bench"}]')
    return transport


def _room_size(fanout: RoomFanout) -> int:
    return len(fanout.rooms.get("/", {}).get(ROOM, ()))


async def _rounds(
    args: argparse.Namespace,
    fanout: RoomFanout,
    engine: Engine,
    stats: WorkerStats,
    polling: list[PollingTransport],
) -> dict[str, dict[str, float]]:
    message = RoomMessage(ROOM, "score", {"t": 1765000000.123}, fanout.host_id)
    raw = encode_message(RoomMessage(ROOM, "score", {"t": 1765000000.123}, OTHER_HOST))
    text = '42["score",{"t":1765000000.123}]'
    frame = ws.frame(ws.TEXT, ("4" + text).encode())
    transports = [
        s.protocol.transport
        for s in engine.sessions.values()
        if isinstance(s.protocol, EngineProtocol) and s.protocol.transport is not None
    ]

    fds = [stream_fd(transport) for transport in transports]
    write = os.write

    async def floor() -> None:
        for fd in fds:
            write(fd, frame)

    async def through_uvloop() -> None:
        for transport in transports:
            transport.write(frame)

    run: dict[str, Callable[[], Any]] = {
        "local": lambda: fanout._deliver(message),
        "redis": lambda: fanout._receive(raw),
        "floor": floor,
        "uvloop": through_uvloop,
    }
    recipients = args.sockets + args.polling
    ways = args.ways
    cpu: dict[str, list[float]] = {way: [] for way in ways}
    wall: dict[str, list[float]] = {way: [] for way in ways}
    split = {way: [0.0, 0.0] for way in ways}
    sent_before = stats.events_sent["score"]
    for round_ in range(args.rounds):
        for way in ways if round_ % 2 == 0 else ways[::-1]:
            user, system = _rusage()
            started_cpu, started = time.process_time(), time.perf_counter()
            await run[way]()
            elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
            user_after, system_after = _rusage()
            split[way][0] += user_after - user
            split[way][1] += system_after - system
            cpu[way].append(elapsed_cpu / recipients)
            wall[way].append(elapsed / recipients)
            for transport in polling:
                transport.take()
            await asyncio.sleep(args.pause)  # the drainer reads; the kernel's buffers empty
    delivered = stats.events_sent["score"] - sent_before
    expected = sum(way in ("local", "redis") for way in ways) * args.rounds * recipients
    if delivered != expected or len(engine.sessions) != recipients:
        raise SystemExit(f"delivered {delivered} of {expected}; {len(engine.sessions)} sessions")
    results = {}
    for way in ways:
        total = split[way][0] + split[way][1]
        results[way] = {
            "cpu_us": 1e6 * statistics.median(cpu[way]),
            "wall_us": 1e6 * statistics.median(wall[way]),
            "user_share": split[way][0] / total if total else 0.0,
            "user_us": 1e6 * split[way][0] / (args.rounds * recipients),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=10000)
    parser.add_argument("--polling", type=int, default=0, help="long-polling members too")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between deliveries")
    parser.add_argument("--drain", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ways", default=",".join(WAYS), help="which deliveries to time (for a profiler)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    args.ways = tuple(args.ways.split(","))
    if args.drain is not None:
        drain(args.drain, args.sockets)
        return
    os.sched_setaffinity(0, {SERVER_CPU})
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(_serve(args))
    if args.json:
        print(json.dumps(results))
        return
    recipients = args.sockets + args.polling
    floor = results["floor"]["cpu_us"] if "floor" in results else 0.0
    print(f"{recipients} recipients ({args.polling} polling), median of {args.rounds} rounds")
    print(
        "| way | CPU µs per recipient | above floor, µs | wall µs | user share "
        "| user µs per recipient | CPU ms per publish |"
    )
    print("|---|---|---|---|---|---|---|")
    for way, r in results.items():
        above = "-" if way == "floor" else f"{r['cpu_us'] - floor:.2f}"
        print(
            f"| {way} | {r['cpu_us']:.2f} | {above} | {r['wall_us']:.2f} | "
            f"{100 * r['user_share']:.0f}% | {r['user_us']:.2f} | "
            f"{r['cpu_us'] * recipients / 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
