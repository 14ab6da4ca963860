"""Which request lines a worker hands to a sibling (`pushserver.handoff.owner_of_request`), and
the polling transport's queue (`pushserver.polling.PollingTransport`)."""

from __future__ import annotations

import pytest

from pushserver import eio
from pushserver.engine import Engine
from pushserver.handoff import owner_of_request
from pushserver.polling import PollingTransport
from pushserver.stats import WorkerStats


def sid(worker: int) -> str:
    return eio.SID_ALPHABET[worker] + "x" * (eio.SID_LENGTH - 1)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"GET /socket.io/?EIO=4&transport=polling&sid={sid(2)} HTTP/1.1", 2),
        (f"POST /socket.io/?EIO=3&transport=polling&t=abc&sid={sid(3)} HTTP/1.1", 3),
        (f"GET /socket.io?EIO=4&transport=websocket&sid={sid(1)} HTTP/1.1", 1),
        (f"GET /socket.io/?EIO=4&transport=polling&sid={sid(0)} HTTP/1.1", None),
        (f"GET /socket.io/?EIO=4&transport=polling&sid={sid(4)} HTTP/1.1", None),
        ("GET /socket.io/?EIO=4&transport=polling HTTP/1.1", None),
        (f"GET /publish?sid={sid(2)} HTTP/1.1", None),
        ("GET /socket.io/?sid=short HTTP/1.1", None),
        ("GET /socket.io/?sid=%ff%fe HTTP/1.1", None),
        ("garbage", None),
        ("GET  /socket.io/?sid= HTTP/1.1", None),
    ],
    ids=[
        "sibling", "sibling-post", "no-slash-upgrade", "ours", "no-such-worker", "no-sid",
        "not-engine-io", "malformed-sid", "undecodable", "garbage", "extra-space",
    ],
)  # fmt: skip
def test_owner_of_request(line: str, expected: int | None) -> None:
    assert owner_of_request(line.encode("latin-1"), me=0, workers=4) == expected


def engine() -> Engine:
    return Engine(stats=WorkerStats(), refusal=lambda: None, max_http_buffer_size=1000)


def test_a_closed_polling_transport_queues_one_close_packet_and_nothing_after() -> None:
    transport = PollingTransport(engine())
    transport.write_text("4hello")
    transport.close(1000, "drain")
    transport.close(1000, "again")
    transport.write_text("4late")
    assert transport.take() == ["4hello", "1"]


def test_the_queue_moves_to_the_websocket_on_upgrade() -> None:
    class Socket:
        kind = "websocket"

        def __init__(self) -> None:
            self.sent: list[str | bytes] = []

        def write_text(self, text: str) -> None:
            self.sent.append(text)

        def write_binary(self, data: bytes) -> None:
            self.sent.append(data)

    transport = PollingTransport(engine())
    transport.write_text("42[1]")
    transport.write_binary(b"\x01")
    websocket = Socket()
    transport.upgraded_to(websocket)  # type: ignore[arg-type]
    transport.write_text("4after")
    assert websocket.sent == ["42[1]", b"\x01"]
    assert transport.take() == []


async def test_a_receiving_end_whose_senders_are_all_gone_stops_being_read() -> None:
    import socket

    from pushserver.handoff import Handoff

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stats = WorkerStats()
    handoff = Handoff(0, [ours, theirs], stats)
    handoff.start()
    theirs.close()  # the last sender: the end now reads as end-of-file, and stays readable
    handoff._receive()  # returns (it spun for ever before) ...
    assert stats.handoffs["malformed"] == 0
    handoff.stop()  # ... having removed its reader already: removing it again is a no-op
    ours.close()
