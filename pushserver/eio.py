"""engine.io's wire formats, v3 and v4, as plain functions: no I/O, every input is outside input.

`pushserver.engine` (websocket) and `pushserver.polling` (HTTP long-polling) call these; the
handshake query, the open packet, the polling payloads and engine.io's JSON error bodies live here.

A packet is a `str` for a text packet, its engine.io type digit first (`"4hello"`, `"2"`), or
`bytes` for a binary MESSAGE (the data only; the type is implied).

- v4 payload (engine.io 4+, socket.io 3+): packets joined by the record separator `\\x1e`, a
  binary packet as `"b"` + base64.
- v3 payload (engine.io 3, socket.io 2): each packet as `<length>:<packet>`, the length in
  UTF-16 code units as JavaScript's `String.length` counts them; a binary message as `"b4"` +
  base64. (The XHR2 binary payload form is not accepted: our clients never send binary.)

Differences the engine must honour: in v3 the *client* pings (`"2"`) and the server answers
(`"3"`); in v4 the server pings. socket.io v2 (over engine.io v3) connects the default namespace
by itself: the server sends `"40"` after the open packet without waiting for a CONNECT.

The parsers are strict and bounded: anything else raises `EioError` (a `ValueError`) with a
fixed `cause`, never client bytes, so a caller may count and log it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Packet = str | bytes

RECORD_SEPARATOR = "\x1e"
# engine.io packet types: open, close, ping, pong, message, upgrade, noop.
PACKET_TYPES = frozenset("0123456")
# A v3 length prefix longer than this many digits cannot fit any body we accept.
_MAX_LENGTH_DIGITS = 9

# base64url without padding: 64 characters, so a session id's first one names one of up to 64
# workers (the `--workers` maximum) and the other 19 (114 random bits) make it unguessable.
SID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
SID_LENGTH = 20


class EioError(ValueError):
    """A payload, packet or handshake that engine.io does not allow; `cause` is our word."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Refusal(enum.IntEnum):
    """engine.io's error codes, as its server answers them (HTTP 400 unless said otherwise)."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5

    @property
    def message(self) -> str:
        return _REFUSAL_MESSAGES[self]


_REFUSAL_MESSAGES = {
    Refusal.UNKNOWN_TRANSPORT: "Transport unknown",
    Refusal.UNKNOWN_SID: "Session ID unknown",
    Refusal.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    Refusal.BAD_REQUEST: "Bad request",
    Refusal.FORBIDDEN: "Forbidden",
    Refusal.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


# engine.io's own words for an Origin it does not accept (code 4, FORBIDDEN).
NOT_AN_ACCEPTED_ORIGIN = "Not an accepted origin"


def error_body(refusal: Refusal, message: str | None = None) -> str:
    """The JSON body engine.io's server sends with a refusal (its usual message unless one is
    given)."""
    return json.dumps({"code": int(refusal), "message": message or refusal.message})


# -- session ids ------------------------------------------------------------------------------


def new_sid(worker: int) -> str:
    """A session id whose first character names the worker that owns the session."""
    rest = base64.urlsafe_b64encode(secrets.token_bytes(15)).decode()[: SID_LENGTH - 1]
    return SID_ALPHABET[worker] + rest


def owner_of(sid: str) -> int | None:
    """The worker index a session id names, or None if it names none."""
    if len(sid) != SID_LENGTH:
        return None
    index = SID_ALPHABET.find(sid[0])
    return None if index < 0 else index


# -- the handshake query ----------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """What an engine.io request's query says: protocol version, transport, session."""

    protocol: int
    transport: str
    sid: str | None
    # v3 clients without binary support ask for base64 (`b64=1`); we send no binary anyway.
    base64: bool = False


class EioRefused(Exception):
    """A request engine.io answers with one of its error codes."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def parse_handshake(query: Mapping[str, str], *, allow_eio3: bool) -> Handshake:
    """The request's engine.io parameters, or an `EioRefused` with engine.io's code."""
    transport = query.get("transport")
    if transport not in ("polling", "websocket"):
        raise EioRefused(Refusal.UNKNOWN_TRANSPORT)
    version = query.get("EIO")
    if version == "4":
        protocol = 4
    elif version == "3" and allow_eio3:
        protocol = 3
    else:
        raise EioRefused(Refusal.UNSUPPORTED_PROTOCOL_VERSION)
    if "j" in query:  # JSONP polling (v3): not served
        raise EioRefused(Refusal.BAD_REQUEST)
    sid = query.get("sid")
    if sid is not None and owner_of(sid) is None:
        raise EioRefused(Refusal.UNKNOWN_SID)
    return Handshake(protocol, transport, sid, query.get("b64") in ("1", "true"))


# -- the open packet --------------------------------------------------------------------------


def open_packet(
    protocol: int,
    sid: str,
    *,
    upgrades: Sequence[str],
    ping_interval_ms: int,
    ping_timeout_ms: int,
    max_payload: int,
) -> str:
    """The OPEN packet. v3 has no `maxPayload` (its clients ignore it; engine.io 3 sent none)."""
    head, tail = _open_template(
        protocol, tuple(upgrades), ping_interval_ms, ping_timeout_ms, max_payload
    )
    # Our own ids need no escaping; anything else is escaped as JSON would escape it.
    if len(sid) == SID_LENGTH and not sid.strip(SID_ALPHABET):
        return head + sid + tail
    return head + json.dumps(sid)[1:-1] + tail


@functools.cache
def _open_template(
    protocol: int,
    upgrades: tuple[str, ...],
    ping_interval_ms: int,
    ping_timeout_ms: int,
    max_payload: int,
) -> tuple[str, str]:
    """The OPEN packet around its sid, built once per kind of session."""
    marker = "A" * SID_LENGTH
    fields: dict[str, object] = {
        "sid": marker,
        "upgrades": list(upgrades),
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
    }
    if protocol >= 4:
        fields["maxPayload"] = max_payload
    head, _, tail = ("0" + json.dumps(fields, separators=(",", ":"))).partition(marker)
    return head, tail


# -- payloads ---------------------------------------------------------------------------------


def _text_packet(text: str) -> str:
    if not text or text[0] not in PACKET_TYPES:
        raise EioError("malformed_packet")
    return text


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EioError("malformed_packet") from exc


def _text_of(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EioError("malformed_packet") from exc


def encode_payload_v4(packets: Sequence[Packet]) -> str:
    return RECORD_SEPARATOR.join(
        "b" + base64.b64encode(p).decode() if isinstance(p, bytes) else p for p in packets
    )


def decode_payload_v4(body: bytes, max_packets: int) -> list[Packet]:
    """A v4 POST body as packets: at most `max_packets`, each well-formed."""
    text = _text_of(body)
    if not text:
        raise EioError("empty_payload")
    parts = text.split(RECORD_SEPARATOR, max_packets)
    if len(parts) > max_packets:
        raise EioError("too_many_packets")
    return [_b64(part[1:]) if part[:1] == "b" else _text_packet(part) for part in parts]


def utf16_length(text: str) -> int:
    """`text.length` in JavaScript: characters beyond the BMP count twice."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def encode_payload_v3(packets: Sequence[Packet]) -> str:
    parts = []
    for p in packets:
        text = "b4" + base64.b64encode(p).decode() if isinstance(p, bytes) else p
        parts.append(f"{utf16_length(text)}:{text}")
    return "".join(parts)


def decode_payload_v3(body: bytes, max_packets: int) -> list[Packet]:
    """A v3 POST body (`<length>:<packet>`…) as packets: at most `max_packets`."""
    text = _text_of(body)
    if not text:
        raise EioError("empty_payload")
    # Lengths count UTF-16 code units, so the walk is over UTF-16: two bytes a unit.
    units = text.encode("utf-16-le", "surrogatepass")
    packets: list[Packet] = []
    at, end = 0, len(units)
    while at < end:
        if len(packets) == max_packets:
            raise EioError("too_many_packets")
        digits = ""
        while at < end and units[at + 1] == 0 and 48 <= units[at] <= 57:
            digits += chr(units[at])
            at += 2
            if len(digits) > _MAX_LENGTH_DIGITS:
                raise EioError("malformed_payload")
        if not digits or at >= end or units[at : at + 2] != b":\x00":
            raise EioError("malformed_payload")
        at += 2
        length = int(digits)
        stop = at + 2 * length
        if length == 0 or stop > end:
            raise EioError("malformed_payload")
        try:
            packet = units[at:stop].decode("utf-16-le")
        except UnicodeDecodeError as exc:  # a length that splits a surrogate pair
            raise EioError("malformed_payload") from exc
        at = stop
        if packet[0] == "b":
            if packet[1:2] != "4":
                raise EioError("malformed_packet")
            packets.append(_b64(packet[2:]))
        else:
            packets.append(_text_packet(packet))
    return packets
