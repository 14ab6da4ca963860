"""The baseline: the plain python-socketio app on uvicorn with its defaults.

    python -m bench.baseline_server PORT

The same events and publish route as pushscale and the Node reference, nothing else: the
default in-memory manager (no Redis), uvicorn's defaults (per-message deflate on).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")


@sio.on("joinByGameId")  # type: ignore[untyped-decorator]
async def join(sid: str, payload: dict[str, Any]) -> dict[str, bool]:
    await sio.enter_room(sid, f"game:{payload['gameId']}")
    return {"ok": True}


@sio.on("visibilityChange")  # type: ignore[untyped-decorator]
async def visibility(sid: str, payload: Any = None) -> None:
    return None


async def publish(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    document = json.loads(body)
    await sio.emit(document["event"], document["data"], room=f"game:{document['gameId']}")
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


app = socketio.ASGIApp(sio, other_asgi_app=publish)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
