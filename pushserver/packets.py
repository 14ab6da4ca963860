"""The socket.io packets a client may send, decoded with bounds before anything acts on them (pure).

`pushserver.push` calls `decode` on every engine.io MESSAGE a client sends. python-socketio's
own decoder would take anything (up to 100-digit ack ids, unbounded nesting, `NaN`, packet
types only a server sends) and leave each handler to cope; here a packet is either one of the
four kinds a client sends, in the shape the socket.io protocol (v5) gives it, or a
`PacketError` whose `cause` (a fixed word, never client bytes) is what gets counted and logged.

Format: `<type>[<namespace>,][<ack id>][<JSON data>]`, e.g. `2["joinByGameId",{"gameId":"1"}]`
or `21["joinByGameId",{"gameId":"1"}]` (ack id 1).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from pushserver import strictjson

# JavaScript's Number.MAX_SAFE_INTEGER: the client echoes the id back as a number.
_MAX_ACK_ID = 2**53 - 1
_MAX_ACK_ID_DIGITS = len(str(_MAX_ACK_ID))


class Kind(enum.IntEnum):
    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@dataclass(frozen=True)
class ClientPacket:
    kind: Kind
    namespace: str
    ack_id: int | None
    data: Any

    @property
    def event(self) -> str:
        """The event name of an EVENT packet; the packet kind for the others."""
        if self.kind is Kind.EVENT:
            name: str = self.data[0]
            return name
        return self.kind.name.lower()


class PacketError(ValueError):
    """A client packet that is not socket.io; `cause` is one of `CAUSES`."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


CAUSES = frozenset(
    {"malformed_packet", "binary_packet", "unexpected_packet", "too_deep", "not_finite"}
)


_KINDS = tuple(Kind(number) for number in range(7))


def decode(text: str, max_depth: int = strictjson.MAX_DEPTH) -> ClientPacket:
    """One client packet, or `PacketError`; no other exception comes out, whatever `text`."""
    if not text or text[0] not in "0123456":
        raise PacketError("malformed_packet", "a socket.io packet starts with its type, 0-6")
    kind = _KINDS[ord(text[0]) - 48]  # an enum call per packet costs more than the rest
    if kind in (Kind.BINARY_EVENT, Kind.BINARY_ACK):
        # Every event this server takes is JSON; binary attachments are never buffered.
        raise PacketError("binary_packet", "binary packets are not accepted")
    if kind is Kind.CONNECT_ERROR:
        raise PacketError("unexpected_packet", "CONNECT_ERROR is sent by servers only")
    rest = text[1:]
    namespace = "/"
    if rest.startswith("/"):
        end = rest.find(",")
        namespace, rest = (rest, "") if end < 0 else (rest[:end], rest[end + 1 :])
    digits = len(rest) - len(rest.lstrip("0123456789"))
    ack_id = None
    if digits:
        if digits > _MAX_ACK_ID_DIGITS or int(rest[:digits]) > _MAX_ACK_ID:
            raise PacketError("malformed_packet", "the ack id is larger than 2^53 - 1")
        ack_id, rest = int(rest[:digits]), rest[digits:]
    data = None
    if rest:
        try:
            data = strictjson.loads(rest, max_depth)
        except strictjson.JsonRejected as exc:
            cause = exc.code if exc.code in CAUSES else "malformed_packet"
            raise PacketError(cause, exc.message) from None
    return _checked(ClientPacket(kind, namespace, ack_id, data))


def _checked(packet: ClientPacket) -> ClientPacket:
    kind, data = packet.kind, packet.data
    if kind is Kind.CONNECT:
        if data is not None and not isinstance(data, dict):
            raise PacketError("malformed_packet", "CONNECT data (auth) must be an object")
        if packet.ack_id is not None:
            raise PacketError("malformed_packet", "CONNECT carries no ack id")
    elif kind is Kind.DISCONNECT:
        if data is not None or packet.ack_id is not None:
            raise PacketError("malformed_packet", "DISCONNECT carries nothing")
    elif kind is Kind.EVENT:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise PacketError(
                "malformed_packet", "an EVENT packet must carry a list starting with its name"
            )
    elif kind is Kind.ACK:
        if packet.ack_id is None or not isinstance(data, list):
            raise PacketError("malformed_packet", "an ACK packet must carry an id and a list")
    return packet


def ack_text(namespace: str, ack_id: int, reply: list[Any]) -> str:
    """The ACK that answers a client's event `ack_id`, as python-socketio's `Packet` encodes
    it, without building one (it walks the data looking for bytes first): our replies are
    JSON, never binary."""
    prefix = "3" if namespace == "/" else f"3{namespace},"
    return f"{prefix}{ack_id}{json.dumps(reply, separators=(',', ':'))}"
