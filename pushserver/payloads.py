"""What clients and publishers may send, checked before anything acts on it (pure).

`pushserver.push` calls `game_id_of` for `joinByGameId` / `leaveByGameId`; `pushserver.routes`
calls `parse_publish` for `POST /publish`. Both raise `PayloadError`, whose `code` and message go
back to the sender verbatim, so they name the field and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pushserver import strictjson

# Room names are built from game ids; keeping them short and plain keeps the rooms table, the
# Redis messages and the logs free of anything a client could smuggle in.
_GAME_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_EVENT = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")

# Names the socket.io client reserves or gives a meaning of its own; publishing them would
# confuse every client in the room.
RESERVED_EVENTS = frozenset(
    {
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "error",
        "message",
        "newListener",
        "removeListener",
    }
)


class PayloadError(ValueError):
    """A payload is not what its event or endpoint expects."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def room_of(game_id: str) -> str:
    return f"game:{game_id}"


def _game_id(value: Any, where: str) -> str:
    # bool is an int in Python; `{gameId: true}` is a client bug, not game 1.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _GAME_ID.fullmatch(value):
        raise PayloadError(
            "bad_game_id",
            f"{where} must be a string of 1-128 letters, digits, '_', '.', ':' or '-' "
            "starting with a letter or digit",
        )
    return value


def game_id_of(payload: Any) -> str:
    """The game id of a `joinByGameId` / `leaveByGameId` payload: `{"gameId": "..."}`."""
    if not isinstance(payload, dict):
        raise PayloadError("bad_payload", 'expected an object like {"gameId": "123"}')
    if "gameId" not in payload:
        raise PayloadError("bad_payload", "missing gameId")
    return _game_id(payload["gameId"], "gameId")


@dataclass(frozen=True)
class PublishRequest:
    game_id: str
    event: str
    data: Any

    @property
    def room(self) -> str:
        return room_of(self.game_id)


def _json_object(body: bytes, fields: set[str]) -> dict[str, Any]:
    """A request body that must be a JSON object with no fields but `fields`, that a
    JavaScript client could parse (`pushserver.strictjson`: no NaN or Infinity, nesting at most
    `strictjson.MAX_DEPTH`)."""
    try:
        document = strictjson.loads(body)
    except strictjson.JsonRejected as exc:
        raise PayloadError(exc.code, f"body: {exc.message}") from None
    if not isinstance(document, dict):
        raise PayloadError("bad_payload", "body must be a JSON object")
    unknown = sorted(set(document) - fields)
    if unknown:
        raise PayloadError("bad_payload", f"unknown fields: {', '.join(unknown)}")
    return document


def parse_publish(body: bytes) -> PublishRequest:
    """Decode a `POST /publish` body: `{"gameId": ..., "event": ..., "data": ...}`."""
    document = _json_object(body, {"gameId", "event", "data"})
    missing = [field for field in ("gameId", "event", "data") if field not in document]
    if missing:
        raise PayloadError("bad_payload", f"missing fields: {', '.join(missing)}")
    event = document["event"]
    if not isinstance(event, str) or not _EVENT.fullmatch(event):
        raise PayloadError(
            "bad_event",
            "event must be 1-64 letters, digits, '_', '.', ':' or '-' starting with a letter",
        )
    if event in RESERVED_EVENTS:
        raise PayloadError("reserved_event", f"event {event!r} is reserved by socket.io")
    return PublishRequest(_game_id(document["gameId"], "gameId"), event, document["data"])


@dataclass(frozen=True)
class ShedRequest:
    count: int
    interval_ms: float | None


def parse_shed(body: bytes) -> ShedRequest:
    """Decode a `POST /admin/shed` body: `{"count": N, "intervalMs": 5}` (intervalMs optional)."""
    document = _json_object(body, {"count", "intervalMs"})
    count = document.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise PayloadError("bad_count", "count must be a whole number of sockets, at least 1")
    interval = document.get("intervalMs")
    if interval is not None and (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 <= interval <= 60_000
    ):
        raise PayloadError("bad_interval", "intervalMs must be a number from 0 to 60000")
    return ShedRequest(count, None if interval is None else float(interval))
