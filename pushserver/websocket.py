"""RFC 6455 for the server side, as plain functions and a frame reader (pure: bytes in and out).

`pushserver.engine` feeds a connection's bytes to `FrameReader.feed` and writes what `frame`
returns; `http_error` is the HTTP answer to a connection refused before (or instead of) the
upgrade, for the engine and `pushserver.httpguard`. Only what a socket.io server needs: no
extensions (per-message deflate costs ~40 KB of zlib state per connection for payloads of a few
bytes), client frames must be masked, messages are capped at `max_size` bytes. A violation
raises `ProtocolError` with the close code to send.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from websockets.speedups import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

# Close codes (RFC 6455 §7.4.1).
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA = 1000, 1001, 1002, 1007
POLICY_VIOLATION, TOO_BIG, INTERNAL_ERROR, SERVICE_RESTART = 1008, 1009, 1011, 1012

# An upgrade request's line and headers together: a browser's are 1 to 2 KB.
MAX_HANDSHAKE_BYTES = 16 * 1024


_PHRASES = {
    400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
    431: "Request Header Fields Too Large", 503: "Service Unavailable",
}  # fmt: skip


def http_error(
    status: int,
    body: str,
    content_type: str = "text/plain; charset=utf-8",
    retry_after: int | None = None,
) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection."""
    payload = body.encode() + (b"" if content_type.startswith("application") else b"\n")
    head = (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n"
        + (f"retry-after: {retry_after}\r\n" if retry_after else "")
        + "\r\n"
    )
    return head.encode() + payload


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def accept_key(key: str) -> str:
    """The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final frame, as a server sends it."""
    length = len(payload)
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, length) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, length) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123])


@dataclass(frozen=True)
class Message:
    """A whole message or a control frame: `data` is str for TEXT, bytes otherwise."""

    opcode: int
    data: str | bytes
    size: int


class FrameReader:
    """Turns a client's byte stream into messages, reassembling fragments."""

    __slots__ = ("_buffer", "_fragments", "_fragments_opcode", "_fragments_size", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragments_opcode = 0
        self._fragments_size = 0

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        while True:
            if len(buffer) < 2:
                return messages
            first, second = buffer[0], buffer[1]
            if first & 0x70:
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits set (no extension agreed)")
            if not second & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "client frames must be masked")
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    return messages
                length = struct.unpack_from("!H", buffer, 2)[0]
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return messages
                length = struct.unpack_from("!Q", buffer, 2)[0]
                offset = 10
            if opcode >= CLOSE:
                if not fin or length > 125:
                    raise ProtocolError(PROTOCOL_ERROR, "bad control frame")
            elif self._fragments_size + length > self.max_size:
                # Checked before the payload arrives, so a huge frame is never buffered.
                raise ProtocolError(TOO_BIG, f"message over {self.max_size} bytes")
            end = offset + 4 + length
            if len(buffer) < end:
                return messages
            payload = apply_mask(
                bytes(buffer[offset + 4 : end]), bytes(buffer[offset : offset + 4])
            )
            del buffer[:end]
            message = self._take(fin, opcode, payload)
            if message is not None:
                messages.append(message)

    def _take(self, fin: int, opcode: int, payload: bytes) -> Message | None:
        if opcode in (CLOSE, PING, PONG):
            return Message(opcode, payload, len(payload))
        if opcode == CONTINUATION:
            if not self._fragments:
                raise ProtocolError(PROTOCOL_ERROR, "continuation without a first fragment")
        elif opcode in (TEXT, BINARY):
            if self._fragments:
                raise ProtocolError(PROTOCOL_ERROR, "new message inside a fragmented one")
            self._fragments_opcode = opcode
        else:
            raise ProtocolError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        self._fragments.append(payload)
        self._fragments_size += len(payload)
        if not fin:
            return None
        whole = b"".join(self._fragments)
        kind = self._fragments_opcode
        self._fragments = []
        self._fragments_size = 0
        if kind == BINARY:
            return Message(BINARY, whole, len(whole))
        try:
            return Message(TEXT, whole.decode(), len(whole))
        except UnicodeDecodeError:
            raise ProtocolError(INVALID_DATA, "text message is not UTF-8") from None


def close_code_of(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else NORMAL
