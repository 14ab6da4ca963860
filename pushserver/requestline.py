"""What a client-port request line says before any HTTP parsing: is it engine.io, whose session
does it name, does it ask for a websocket.

`pushserver.httpguard` reads the first line of each request on the client port and acts on it
before uvicorn parses a byte: a request naming a sibling worker's session is handed over
(`pushserver.handoff`), and a websocket upgrade of `/socket.io/` goes straight to the engine's
own protocol (`pushserver.wsprotocol`), which reads the handshake itself. Everything else, and
anything this module cannot read, is uvicorn's to judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

_PATH = b"/socket.io"
# A real engine.io query has at most six fields (EIO, transport, sid, t, b64, j); a line with
# many more is not one to act on early.
_MAX_FIELDS = 16


@dataclass(frozen=True, slots=True)
class EngineRequest:
    # The `sid` query field, if any (not checked: `eio.owner_of` says whose it is).
    sid: str | None
    # `GET …transport=websocket… HTTP/1.1`: an upgrade the engine's protocol reads itself.
    websocket: bool


def engine_request(line: bytes) -> EngineRequest | None:
    """The engine.io request in `line` (`GET /socket.io/?EIO=4&transport=… HTTP/1.1`), or None
    if it is not one or cannot be read. The query is read as the engine reads it (the first
    value of each field, percent-decoded), so the two never disagree about a request."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, target, version = parts
    path, _, query = target.partition(b"?")
    if path.rstrip(b"/") != _PATH:
        return None
    try:
        fields = parse_qs(query.decode("ascii"), max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    sids = fields.get("sid")
    transports = fields.get("transport")
    websocket = (
        method == b"GET"
        and version == b"HTTP/1.1"
        and transports is not None
        and transports[0] == "websocket"
    )
    return EngineRequest(None if sids is None else sids[0], websocket)
