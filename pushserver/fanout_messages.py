"""The one message a push server puts on the Redis channel, and its strict parser (pure).

`pushserver.fanout` encodes a publish with `encode_message` and runs every message the channel
delivers through `parse_message` before anything acts on it. Redis is a trust boundary: any
client that can reach it may publish on the channel, so a message is data to check, never
code to run (python-socketio's managers once exchanged pickles; an unpickled message is remote
code execution) and never a command (its managers also obey `disconnect`, `enter_room` and
`close_room` messages; ours only ever publish `emit`).

The shape is python-socketio's `emit` message, field for field, so pods of the previous release
(which publish through the library's encoder) interoperate during a rolling update. Anything
else raises `MessageRejected`, whose `reason` is one of `REJECT_REASONS`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pushserver.payloads import RESERVED_EVENTS

REJECT_REASONS = ("too_large", "pickle", "not_json", "bad_schema")

# The patterns of `pushserver.payloads` (game ids and event names): a message naming anything
# else was not made from a publish any worker accepted. tests/core/test_fanout_messages.py checks
# that every accepted publish also parses here.
_ROOM = re.compile(r"game:[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# python-socketio's host ids: `uuid.uuid4().hex`.
_HOST_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS = frozenset(
    {"method", "event", "data", "binary", "namespace", "room", "skip_sid", "callback", "host_id"}
)
# Room, event, host id and field names take under 400 bytes; the rest is headroom.
_ENVELOPE_BYTES = 4096
# What re-encoding can add to a publish body that `json.loads` accepted: escaping a non-ASCII
# character at most triples its bytes (2-byte UTF-8 → `\\u00e9`), and a float's repr at most
# quadruples a literal with its separator (`1e15,` → `1000000000000000.0, `).
_GROWTH = 4


class MessageRejected(ValueError):
    """A message on the channel is not one a push server published; `reason` says how."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class RoomMessage:
    """An event for every client in `room`, sent by the worker `host_id`."""

    room: str
    event: str
    data: Any
    host_id: str


def max_message_bytes(max_publish_bytes: int) -> int:
    """The largest message a worker accepts: what a `POST /publish` of at most
    `max_publish_bytes` can become once encoded."""
    return _GROWTH * max_publish_bytes + _ENVELOPE_BYTES


def encode_message(message: RoomMessage) -> bytes:
    return json.dumps(
        {
            "method": "emit",
            "event": message.event,
            "data": [message.data],
            "binary": False,
            "namespace": "/",
            "room": message.room,
            "skip_sid": None,
            "callback": None,
            "host_id": message.host_id,
        },
        separators=(",", ":"),
    ).encode()


def parse_message(raw: bytes, max_bytes: int) -> RoomMessage:
    """The `RoomMessage` in `raw`, or `MessageRejected`; nothing else escapes."""
    if len(raw) > max_bytes:
        raise MessageRejected("too_large", f"{len(raw)} bytes, above the {max_bytes} accepted")
    # Every pickle protocol from 2 on starts with the PROTO opcode and its version.
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise MessageRejected("pickle", "a pickle (an old python-socketio on this channel?)")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integers past the 4300-digit limit;
        # RecursionError, nesting deeper than the interpreter's stack.
        raise MessageRejected("not_json", f"not UTF-8 JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise MessageRejected("bad_schema", f"a JSON {type(document).__name__}, not an object")
    if set(document) != _FIELDS:
        raise MessageRejected("bad_schema", "not the fields of an emit message")
    _expect(document["method"] == "emit", "method is not emit")
    _expect(document["namespace"] == "/", "namespace is not /")
    _expect(document["binary"] is False, "binary is not false")
    _expect(document["skip_sid"] is None, "skip_sid is not null")
    _expect(document["callback"] is None, "callback is not null")
    _expect(_matches(_ROOM, document["room"]), "room is not game:<id>")
    _expect(_matches(_EVENT, document["event"]), "event is not an event name")
    _expect(document["event"] not in RESERVED_EVENTS, "event is reserved by socket.io")
    _expect(_matches(_HOST_ID, document["host_id"]), "host_id is not a host id")
    data = document["data"]
    _expect(isinstance(data, list) and len(data) == 1, "data is not a list of one value")
    return RoomMessage(document["room"], document["event"], data[0], document["host_id"])


def _matches(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise MessageRejected("bad_schema", what)
