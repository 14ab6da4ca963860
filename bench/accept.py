"""A new connection's Python in one worker, without sockets: what our code costs per accept.

    .venv/bin/python -m bench.accept [--connections 4000] [--rounds 5]

A real `Worker` (its engine, socket.io server and room manager; Redis left unreachable, so a
join stays local) is built in this process, and each connection is the life a viewer gives it:
`EngineProtocol` on an in-memory transport gets the upgrade request, the socket.io CONNECT
(`40`) and `joinByGameId`, then the connection is lost. CPU time (`time.process_time`) per
connection, median of `--rounds`; the kernel, uvloop and the network are not in it, which is
what makes it steady enough to compare one change with the next. `bench/compare.py` measures
the whole accept against the Node anchors; this is where its Python goes (run it under py-spy).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

import uvloop

from pushkit.progress import draw_bar, finish_bar
from pushserver.redis_access import RedisAccess
from pushserver.settings import parse_settings
from pushserver.worker import Worker
from pushserver.wsprotocol import EngineProtocol

UPGRADE = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
WARM_UP = 500


def masked(text: bytes) -> bytes:
    """One client text frame (short, masked, as RFC 6455 requires of clients)."""
    mask = b"\x01\x02\x03\x04"
    return (
        bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))
    )


CONNECT = masked(b"40")
JOIN = masked(b'42["joinByGameId",{"gameId":"g1"}]')


class MemoryTransport:
    """What `EngineProtocol` needs of an asyncio transport; writes are kept, not sent."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.protocol: EngineProtocol | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        if not self.closing and self.protocol is not None:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0


async def measure(connections: int, rounds: int) -> tuple[list[float], list[bytes]]:
    settings = parse_settings(
        ["--workers", "1", "--max-connections", "1000000", "--recommended-connections", "1000000"],
        {"PUSHSCALE_PUBLISH_TOKEN": "x" * 32, "PUSHSCALE_LOG_LEVEL": "error"},
    )
    worker = Worker(settings, 0, RedisAccess("redis://127.0.0.1:1"))
    engine = worker.sio.eio
    engine.start()
    state = SimpleNamespace(connections=set())

    async def life() -> tuple[EngineProtocol, MemoryTransport]:
        transport = MemoryTransport()
        protocol = EngineProtocol(None, state, None, engine=engine)
        transport.protocol = protocol
        protocol.connection_made(transport)  # type: ignore[arg-type]
        for data in (UPGRADE, CONNECT, JOIN):
            protocol.data_received(data)
            await asyncio.sleep(0)
        return protocol, transport

    async def batch(count: int) -> list[bytes]:
        open_ = [await life() for _ in range(count)]
        for protocol, _ in open_:
            protocol.connection_lost(None)
        await asyncio.sleep(0)
        return open_[-1][1].written

    await batch(WARM_UP)
    costs = []
    written: list[bytes] = []
    for done in range(rounds):
        started = time.process_time()
        written = await batch(connections)
        costs.append((time.process_time() - started) / connections * 1e6)
        draw_bar("accept", done + 1, rounds)
    finish_bar()
    return costs, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    costs, written = uvloop.run(measure(args.connections, args.rounds))
    # A bench that measured failures would be worse than none: the last one must have joined.
    out = b"".join(written)
    if not out.startswith(b"HTTP/1.1 101") or b'0{"sid"' not in out or b'40{"sid"' not in out:
        raise SystemExit(f"the connection did not complete: {written!r}")
    print("| figure | value |\n|---|---|")
    print(f"| connections per round | {args.connections} |")
    print(f"| Python CPU µs per connection's life (median of {args.rounds}) | "
          f"{statistics.median(costs):.1f} |")  # fmt: skip
    print(f"| rounds, µs | {', '.join(f'{c:.1f}' for c in costs)} |")


if __name__ == "__main__":
    main()
